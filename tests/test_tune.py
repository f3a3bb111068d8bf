"""Studies with the real trainer on tiny synthetic videos: the test split is never read, SIGKILL + rerun, two workers on
one study (sqlite and a throw-away PostgreSQL), multi-objective Pareto front, retrain-best. Trials use the tiny
random backbone for one epoch, so each takes seconds."""
import os, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path

import pytest

optuna = pytest.importorskip('optuna')
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
RUNNER = 'import sys; from steanet.cli import main; sys.exit(main(["tune", *sys.argv[1:]]))'


def _make_videos(root: Path) -> Path:
    try: from steanet.synthetic import make_synthetic_dataset
    except ImportError: from steanet.data import make_synthetic_dataset
    make_synthetic_dataset(root, n_per_class=4, seed=0, size=32, frames=8)
    return root


@pytest.fixture(scope='module')
def videos():
    d = Path(tempfile.mkdtemp(prefix='steanet-tune-videos-'))
    yield _make_videos(d / 'videos')
    shutil.rmtree(d, ignore_errors=True)


def _overrides(videos, study, extra=()):
    return [f'data.root={videos}', 'data.num_frames=4', 'train.batch_size=8', 'tune.epochs=1', f'tune.study={study}',
            'tracking.log_checkpoint=false', *extra]


def _cfg(videos, study, extra=()):
    from steanet.config import make_config
    return make_config('demo', _overrides(videos, study, extra))


def _env():
    # one thread per worker: two CPU workers on two cores must not oversubscribe them (OpenMP spin-waits)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
               HF_HUB_OFFLINE='1', MLFLOW_DISABLE_TELEMETRY='true', MPLBACKEND='Agg', OMP_NUM_THREADS='1')
    return env


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, '-c', RUNNER, *args], env=_env(), cwd=os.environ['STEANET_HOME'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _mlflow(home):
    from mlflow import MlflowClient
    return MlflowClient(f'sqlite:///{home}/mlruns/mlflow.db')


def _check_mlflow_matches(study, home):
    "Exactly one nested run per trial under the study's parent, with the status of the trial's state; none RUNNING."
    from steanet.tune import PARENTS_ATTR, MLFLOW_STATUS, RUN_ATTR, SURPLUS_ATTR
    cl = _mlflow(home)
    (pid,) = study.user_attrs[PARENTS_ATTR].values()  # one tracking store: one parent run
    parent = cl.get_run(pid)
    kids = cl.search_runs([parent.info.experiment_id],
                          filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`steanet.kind` = 'trial'")
    by_trial = {}
    for r in kids:
        n = int(r.data.tags['optuna.trial_number'])
        assert n not in by_trial, f'trial {n} has two MLflow runs'
        by_trial[n] = r
    ran = [t for t in study.trials if not t.user_attrs.get(SURPLUS_ATTR)]
    assert sorted(by_trial) == [t.number for t in ran]
    for t in ran:
        r = by_trial[t.number]
        assert r.info.run_id == t.user_attrs[RUN_ATTR]
        assert r.info.status == MLFLOW_STATUS[t.state.name], (t.number, t.state, r.info.status)
    assert not cl.search_runs([parent.info.experiment_id], filter_string="attributes.status = 'RUNNING'")
    return parent, by_trial


def test_study_never_reads_test_split(videos, tmp_path, monkeypatch):
    "A study reads only the training annotations; the test list may be unreadable. retrain-best then tests once."
    import steanet.data as data
    from steanet.tune import run_study, retrain_best
    real, calls = data.load_records, []
    def guarded(dc, subset='train', *a, **k):
        calls.append(subset)
        if subset != 'train': raise AssertionError(f'the study read the {subset} split')
        return real(dc, subset, *a, **k)
    monkeypatch.setattr(data, 'load_records', guarded)
    cfg = _cfg(videos, 'no-test', ['tune.n_trials=2'])
    s = run_study(cfg, progress=False)
    assert s['states']['COMPLETE'] + s['states']['PRUNED'] == 2 and set(calls) == {'train'}
    # the trial's runs hold validation metrics only
    cl = _mlflow(tmp_path)
    for n in s['ran']:
        from steanet.tune import RUN_ATTR
        rid = optuna.load_study(study_name='no-test', storage=f'sqlite:///{tmp_path}/mlruns/optuna.db').trials[n].user_attrs[RUN_ATTR]
        keys = set(cl.get_run(rid).data.metrics)
        assert any(k.startswith('val/') for k in keys) and not any(k.startswith('test/') for k in keys), keys
    # retrain-best is the one step that reads test: once, at the end, on the full train split
    monkeypatch.setattr(data, 'load_records', real)
    out = retrain_best(cfg, epochs=1)
    m = out['result']['metrics']
    assert 0 <= m['test/top1'] <= 1 and out['trial'] == s['best']['number']
    run = cl.get_run(out['run_id'])
    assert run.data.tags['steanet.kind'] == 'retrain_best' and run.data.tags['mlflow.parentRunId'] == s['parent_run_id']
    assert run.info.status == 'FINISHED' and not any(k.startswith('val/') for k in run.data.metrics)
    assert (run.data.tags['selection'], run.data.tags['val_source']) == ('last', 'none')      # the last epoch, tested once
    assert len(cl.get_metric_history(out['run_id'], 'test/top1')) == 1
    # MLflow datasets: the study's parent run and its trials log the train / val records they share; the retrained
    # run logs train and test (no val)
    def inputs(rid): return {dict((t.key, t.value) for t in i.tags)['mlflow.data.context']: i.dataset.digest
                             for i in cl.get_run(rid).inputs.dataset_inputs}
    study_in = inputs(s['parent_run_id'])
    assert set(study_in) == {'train', 'val'}, study_in
    trial_runs = [[r for r in cl.search_runs([run.info.experiment_id], filter_string=f"tags.`optuna.trial_number` = '{n}'")
                   if r.info.run_id != out['run_id']][0] for n in s['ran']]         # the retrain carries its trial's number too
    trials_in = [inputs(r.info.run_id) for r in trial_runs]
    assert all(t == study_in for t in trials_in), (study_in, trials_in)
    assert set(inputs(out['run_id'])) == {'train', 'test'}


def test_sigkill_mid_trial_then_rerun(videos, tmp_path):
    "SIGKILL during trial 0, same command again: same study, trial FAIL + re-queued, numbers not reused, no RUNNING run."
    from steanet.tune import RUN_ATTR
    args = ['--config', 'demo', '--set', *_overrides(videos, 'killed', ['tune.epochs=2']), '--n-trials', '2', '--no-plots']
    url = f'sqlite:///{tmp_path}/mlruns/optuna.db'
    p = _cli(args)
    victim, t0 = None, time.time()
    while victim is None and time.time() - t0 < 240 and p.poll() is None:
        time.sleep(0.2)
        try: st = optuna.load_study(study_name='killed', storage=url)
        except Exception: continue
        running = [t for t in st.get_trials(states=(TrialState.RUNNING,)) if t.number == 0 and RUN_ATTR in t.user_attrs]
        if running: victim = running[0]
    assert victim is not None, f'trial 0 never started; worker output:\n{p.communicate()[1][-3000:] if p.poll() is not None else ""}'
    time.sleep(0.5)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    st = optuna.load_study(study_name='killed', storage=url)
    assert st.trials[0].state == TrialState.RUNNING          # left behind by the dead worker
    assert _mlflow(tmp_path).get_run(victim.user_attrs[RUN_ATTR]).info.status == 'RUNNING'
    q = _cli(args + ['--json']); out, err = q.communicate(timeout=400)
    assert q.returncode == 0, err[-3000:]
    st = optuna.load_study(study_name='killed', storage=url)
    assert st.trials[0].state == TrialState.FAIL
    retries = [t for t in st.trials if t.system_attrs.get('failed_trial') == 0]
    assert len(retries) == 1 and retries[0].number == 1 and retries[0].params == st.trials[0].params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert [t.number for t in st.trials] == [0, 1, 2]  # the study continued: no number reused, budget of 2 met
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in st.trials) == 2
    assert 'interrupted' in err
    _, runs = _check_mlflow_matches(st, tmp_path)
    assert runs[0].info.status == 'FAILED' and runs[0].data.tags['optuna.state'] == 'FAIL'


def _two_workers(videos, home, storage, study, n=4):
    args = ['--config', 'demo', '--set', *_overrides(videos, study), '--storage', storage, '--n-trials', str(n),
            '--no-plots', '--json']
    ps = [_cli(args), _cli(args)]
    outs = [p.communicate(timeout=500) for p in ps]
    for p, (o, e) in zip(ps, outs): assert p.returncode == 0, e[-3000:]
    st = optuna.load_study(study_name=study, storage=storage)
    from steanet.tune import WORKER_ATTR, counted_trials
    done = [t for t in st.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == n and len(counted_trials(st)) == n
    assert len({t.number for t in st.trials}) == len(st.trials)
    pids = {t.user_attrs[WORKER_ATTR]['pid'] for t in done}
    assert pids <= {p.pid for p in ps} and len(pids) == 2, pids  # both workers trained, on one shared study
    _check_mlflow_matches(st, home)
    return st


def test_two_workers_sqlite(videos, tmp_path):
    _two_workers(videos, tmp_path, f'sqlite:///{tmp_path}/shared.db', 'pair-sqlite')


def _pg_bin():
    import glob
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres():
    "A throw-away PostgreSQL cluster on 127.0.0.1 and a free port, run as a non-root user; yields a storage URL."
    bin_ = _pg_bin()
    if bin_ is None: pytest.skip('PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); '
                                 'install the `postgresql` package (CI does: .ci/run)')
    pytest.importorskip('psycopg', reason='psycopg (v3) is needed for postgresql+psycopg:// storage URLs')
    import pwd
    user = None
    if os.geteuid() == 0:
        for name in ('postgres', 'nobody'):
            try: pwd.getpwnam(name); user = name; break
            except KeyError: pass
        if user is None: pytest.skip('running as root and no postgres/nobody user to run the PostgreSQL server')
    run_as = (['runuser', '-u', user, '--'] if user else [])
    d = Path(tempfile.mkdtemp(prefix='steanet-pg-'))
    os.chmod(d, 0o755)
    if user: shutil.chown(d, user)
    data, sock = d / 'data', d / 'sock'
    for x in (data, sock):
        x.mkdir(); os.chmod(x, 0o700)
        if user: shutil.chown(x, user)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    subprocess.run(run_as + [str(bin_ / 'initdb'), '-D', str(data), '-U', 'steanet', '--auth=trust', '-E', 'UTF8'],
                   check=True, capture_output=True)
    subprocess.run(run_as + [str(bin_ / 'pg_ctl'), '-D', str(data), '-l', str(d / 'log'), '-w', '-t', '60', '-o',
                             f'-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off', 'start'],
                   check=True, capture_output=True)
    try:
        import psycopg
        with psycopg.connect(f'host=127.0.0.1 port={port} user=steanet dbname=postgres', autocommit=True) as c:
            c.execute('CREATE DATABASE optuna')
        yield f'postgresql+psycopg://steanet@127.0.0.1:{port}/optuna'
    finally:
        subprocess.run(run_as + [str(bin_ / 'pg_ctl'), '-D', str(data), '-m', 'immediate', 'stop'], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_two_workers_postgresql(videos, tmp_path, postgres):
    st = _two_workers(videos, tmp_path, postgres, 'pair-pg')
    assert st._storage is not None


def test_multi_objective_pareto(videos, tmp_path):
    "accuracy,params: NSGA-II, a non-empty Pareto front of mutually non-dominated trials, and its plot."
    from steanet.tune import run_study, dominates
    s = run_study(_cfg(videos, 'mo', ['tune.n_trials=3', 'tune.objectives=accuracy,params']), progress=False)
    assert s['directions'] == ['maximize', 'minimize'] and s['states']['COMPLETE'] == 3
    front = s['pareto_front']
    assert front
    for a in front:
        assert not any(dominates(b['values'], a['values'], s['directions']) for b in front)
    st = optuna.load_study(study_name='mo', storage=f'sqlite:///{tmp_path}/mlruns/optuna.db')
    assert {p['number'] for p in front} <= {t.number for t in st.best_trials}
    assert all(t.values[1] == t.user_attrs['tunable_params'] for t in st.trials)
    assert 'pareto_front' in s['plots']
    _check_mlflow_matches(st, tmp_path)


SECRET = 'Pw0rdSECRET'


def _files_with(root, needle):
    return [str(p) for p in Path(root).rglob('*') if p.is_file() and needle.encode() in p.read_bytes()]


def test_password_in_storage_nowhere_and_sigterm_leaves_nothing_running(videos, tmp_path, postgres):
    """`--storage` with a password against a throw-away PostgreSQL: the password is in no file of the project (run
    folders, the MLflow store with its params, tags and artifacts, trials.csv, best_config.yaml), in no MLflow value,
    in none of the study's attributes and on no console line. Then SIGTERM mid-trial: no MLflow run is left RUNNING."""
    from steanet.tune import RUN_ATTR
    storage = postgres.replace('steanet@', f'steanet:{SECRET}@')   # trust auth: the server accepts any password
    args = ['--config', 'demo', '--set', *_overrides(videos, 'secret'), '--storage', storage]
    import contextlib, io
    from steanet.cli import main
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e): rc = main(['tune', *args, '--n-trials', '1', '--json'])
    out, err = o.getvalue(), e.getvalue()
    assert rc == 0, err[-3000:]
    assert SECRET not in out + err
    assert (tmp_path / 'mlruns' / 'studies' / 'secret' / 'trials.csv').is_file()
    assert (tmp_path / 'mlruns' / 'studies' / 'secret' / 'best_config.yaml').is_file()
    assert not _files_with(tmp_path, SECRET)
    cl = _mlflow(tmp_path)
    exp = [e.experiment_id for e in cl.search_experiments()]
    runs = cl.search_runs(exp)
    assert len(runs) == 2                                               # the study's parent and its trial
    for r in runs:
        assert not any(SECRET in v for v in {**r.data.params, **r.data.tags}.values()), r.info.run_id
        if 'tune.storage' in r.data.params: assert f'steanet:***@' in r.data.params['tune.storage']
    st = optuna.load_study(study_name='secret', storage=storage)
    sys_attrs = st._storage.get_study_system_attrs(st._study_id)
    assert SECRET not in repr((st.user_attrs, sys_attrs, [(t.user_attrs, t.system_attrs) for t in st.trials]))

    # the same study continued, stopped by SIGTERM during its next trial: every MLflow run ends
    p = _cli(args + ['--set', 'tune.epochs=30', '--n-trials', '3'])
    t0 = time.time()
    while time.time() - t0 < 240 and p.poll() is None:
        time.sleep(0.2)
        st = optuna.load_study(study_name='secret', storage=storage)
        if [t for t in st.get_trials(states=(TrialState.RUNNING,)) if RUN_ATTR in t.user_attrs]: break
    assert p.poll() is None, p.communicate()[1][-3000:]
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and 'Traceback' not in err and SECRET not in out + err, err[-3000:]
    running = cl.search_runs(exp, filter_string="attributes.status = 'RUNNING'")
    assert not running, [(r.info.run_id, r.data.tags.get('steanet.kind')) for r in running]
    parent = [r for r in cl.search_runs(exp) if r.data.tags.get('steanet.kind') == 'study']
    assert len(parent) == 1 and parent[0].info.status == 'KILLED'
    assert not _files_with(tmp_path, SECRET)
