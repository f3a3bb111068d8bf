"""Trainer, checkpoints, resume after SIGKILL, 2-process DDP, MLflow over HTTP (tiny config, random backbone, tiny synthetic data)."""
import json, os, signal, socket, subprocess, sys, time, urllib.parse, urllib.request
from pathlib import Path

import pytest
import torch

from steanet.testing import tiny_overrides
from steanet.config import make_config, save_config

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


def cli(args, env=None, check=True, timeout=300):
    "Run `steanet <args>` in a subprocess (the same interpreter), returning the CompletedProcess."
    code = 'import sys; from steanet.cli import main; sys.exit(main(sys.argv[1:]))'
    e = dict(os.environ, PYTHONPATH=f'{ROOT}{os.pathsep}{os.environ.get("PYTHONPATH", "")}', OMP_NUM_THREADS='1',
             **(env or {}))
    r = subprocess.run([PY, '-c', code, *args], capture_output=True, text=True, env=e, timeout=timeout)
    if check and r.returncode != 0: raise AssertionError(f'steanet {args[0]} failed ({r.returncode}):\n{r.stderr[-4000:]}')
    return r


def last_json(out: str) -> dict: return json.loads(out.strip().splitlines()[-1])


def load_st(p):
    from safetensors.torch import load_file
    return load_file(str(p))


def test_checkpoint_contents_and_reload(synth_root, tmp_path):
    from steanet.train import fit, load_resume_state
    from steanet.checkpoint import load_checkpoint, CheckpointError
    from steanet.model import build_model, tunable_state_dict, mark_trainable
    torch.set_num_threads(1)
    res = fit(make_config('demo', tiny_overrides(synth_root)), run_dir=tmp_path / 'run', progress=False)
    d = Path(res['run_dir'])
    for f in ('best.safetensors', 'best.json', 'last.safetensors', 'last.json', 'resume.pt', 'config.yaml',
              'confusion.png', 'per_class.csv', 'test_predictions.csv', 'curves.png'):
        assert (d / f).is_file(), f
    sd, meta = load_st(d / 'best.safetensors'), json.loads((d / 'best.json').read_text())
    model, meta2 = load_checkpoint(d)
    # only the tunable tensors, nothing of the frozen backbone
    assert set(sd) == set(tunable_state_dict(model))
    assert not any(k.startswith('visual.conv1') or '.attn.in_proj' in k for k in sd)
    n = sum(v.numel() for v in sd.values())
    assert n == res['tunable_params'] == meta['tunable_params']
    assert (d / 'best.safetensors').stat().st_size < n * 4 + 64 * 1024
    for k in ('config', 'class_names', 'backbone', 'epoch', 'metrics', 'variant', 'num_classes'):
        assert k in meta, k
    assert meta['backbone']['name'] == 'steanet-tiny' and meta['backbone']['pretrained'] is None
    assert len(meta['backbone']['state_sha256']) == 64 and meta['metrics']['test/top1'] == res['metrics']['test/top1']
    # the reloaded model computes what the trained one did: same test metrics through eval
    from steanet.train import eval_checkpoint
    m = eval_checkpoint(d)
    assert m['top1'] == pytest.approx(res['metrics']['test/top1'])
    # resume state loads with weights_only=True (plain tensors and containers)
    st = load_resume_state(d / 'resume.pt'); assert st['epoch'] == 2 and st['pos'] == 0
    # another backbone is refused, unless allowed
    meta['backbone']['seed'] = 12345
    (tmp_path / 'moved').mkdir(); import shutil
    shutil.copy(d / 'best.safetensors', tmp_path / 'moved' / 'best.safetensors')
    (tmp_path / 'moved' / 'best.json').write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match='backbone differs'): load_checkpoint(tmp_path / 'moved')
    with pytest.warns(UserWarning): load_checkpoint(tmp_path / 'moved', allow_backbone_mismatch=True)


def test_unreachable_server_fails_before_training(synth_root, tmp_path, monkeypatch):
    from steanet.tracking import TrackingError
    from steanet.train import fit
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    monkeypatch.setenv('MLFLOW_TRACKING_URI', f'http://127.0.0.1:{port}')
    t = time.time()
    with pytest.raises(TrackingError, match='not reachable'):
        fit(make_config('demo', tiny_overrides(synth_root, **{'tracking.enabled': 'true'})), run_dir=tmp_path / 'r',
            progress=False)
    assert not (tmp_path / 'r').exists()            # nothing was trained or written
    assert time.time() - t < 60


def test_nan_loss_stops_with_message(synth_root, tmp_path):
    from steanet.train import fit, TrainingDiverged
    with pytest.raises(TrainingDiverged, match='last good checkpoint'):
        fit(make_config('demo', tiny_overrides(synth_root, **{'train.lr': 1e30, 'train.clip_grad': 'none',
                                                               'train.epochs': 3})),
            run_dir=tmp_path / 'r', progress=False)


@pytest.fixture(scope='module')
def uninterrupted(synth_root, tmp_path_factory):
    "`(config file, result, run folder)` of the uninterrupted run the kill / SIGTERM tests compare with."
    d = tmp_path_factory.mktemp('uninterrupted'); cfgp = d / 'cfg.yaml'
    # batch 1 over 16 videos: 16 steps per epoch, 3 epochs; MLflow on to resume the same run
    cfg = make_config('demo', tiny_overrides(synth_root, **{'train.batch_size': 1, 'train.epochs': 3,
                                                            'tracking.enabled': 'true'}))
    save_config(cfg, cfgp)
    return cfgp, last_json(cli(['train', '--config', str(cfgp), '--run-dir', str(d / 'full'), '--json']).stdout), d / 'full'


# The trainer in the subprocess pauses right after it writes its first resume state inside the second epoch: it
# touches `<run>.paused` and waits for `<run>.go`. The test signals it there, then lets it go: no race with the
# trainer's speed (a poller of resume.pt once missed the whole window under CI load).
_PAUSING = """
import sys, time
from pathlib import Path
import steanet.train as train
save, run_dir, paused = train.save_resume_state, Path(sys.argv[1]), [False]
def pausing_save(path, state):
    out = save(path, state)
    if not paused[0] and state['epoch'] == 1 and 0 < state['pos'] <= 8:
        paused[0] = True
        Path(f'{run_dir}.paused').touch(); t = time.time()
        while not Path(f'{run_dir}.go').exists() and time.time() - t < 120: time.sleep(0.01)
    return out
train.save_resume_state = pausing_save
from steanet.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _signal_in_second_epoch(cfgp, run_dir, sig, stdout=subprocess.DEVNULL):
    "`steanet train` in a subprocess, sent `sig` once its resume state is inside the second epoch: `(process, state)`."
    from steanet.train import load_resume_state
    env = dict(os.environ, PYTHONPATH=f'{ROOT}{os.pathsep}{os.environ.get("PYTHONPATH", "")}', OMP_NUM_THREADS='1')
    p = subprocess.Popen([PY, '-c', _PAUSING, str(run_dir), 'train', '--config', str(cfgp), '--run-dir', str(run_dir),
                          '--checkpoint-every', '1', '--json'], env=env, stdout=stdout, stderr=subprocess.PIPE)
    paused, deadline = Path(f'{run_dir}.paused'), time.time() + 240
    while time.time() < deadline and p.poll() is None and not paused.exists(): time.sleep(0.01)
    if not paused.exists(): return p, None
    st = load_resume_state(run_dir / 'resume.pt')
    p.send_signal(sig); Path(f'{run_dir}.go').touch()
    return p, st


def _resume_equals(run_dir, full, full_dir) -> dict:
    "`--resume` the run in `run_dir`: its final metrics and adapter weights equal the uninterrupted run's; its result."
    res = last_json(cli(['train', '--resume', str(run_dir), '--json']).stdout)
    for k in ('best_val_top1', 'val/top1', 'val/loss', 'train/epoch_loss', 'test/top1', 'test/loss'):
        assert res['metrics'][k] == pytest.approx(full['metrics'][k], abs=1e-6), k
    for f in ('best.safetensors', 'last.safetensors'):
        a, b = load_st(full_dir / f), load_st(run_dir / f)
        assert set(a) == set(b)
        for k in a: torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=lambda m: f'{f} {k}: {m}')
    return res


def test_kill_and_resume_equals_uninterrupted(uninterrupted, tmp_path):
    "SIGKILL mid-epoch, --resume: final metrics and adapter weights equal an uninterrupted run's."
    from steanet.train import load_resume_state
    cfgp, full, full_dir = uninterrupted
    killed = tmp_path / 'killed'
    p, seen = _signal_in_second_epoch(cfgp, killed, signal.SIGKILL)
    p.wait(30)
    assert seen is not None, f'never saw a mid-epoch resume state (rc={p.returncode}): {p.stderr.read().decode()[-2000:]}'
    assert p.returncode == -signal.SIGKILL
    st = load_resume_state(killed / 'resume.pt')
    assert st['epoch'] == 1 and st['pos'] > 0, (st['epoch'], st['pos'])   # the state on disk is mid-epoch
    assert not (killed / 'test_predictions.csv').exists()
    res = _resume_equals(killed, full, full_dir)
    assert res['run_id'] == st['run_id']                        # the same MLflow run continues


def test_sigterm_stops_after_the_step_and_resume_equals_uninterrupted(uninterrupted, tmp_path):
    """SIGTERM mid-epoch (a real subprocess; Ctrl-C is the same handler, tested in 05_train): the step finishes, the
    resume state of that step is written, exit 130 with one line naming the --resume command, the MLflow run KILLED;
    --resume then reaches the uninterrupted run's metrics and weights."""
    import mlflow
    from steanet.train import load_resume_state
    cfgp, full, full_dir = uninterrupted
    stopped = tmp_path / 'stopped'
    p, seen = _signal_in_second_epoch(cfgp, stopped, signal.SIGTERM, stdout=subprocess.PIPE)
    sent = seen['global_step'] if seen else None
    out, err = p.communicate(timeout=120)
    assert sent is not None, f'never saw a mid-epoch state (rc={p.returncode}): {err.decode()[-2000:]}'
    assert p.returncode == 130, err.decode()[-2000:]
    line = err.decode().strip().splitlines()[-1]
    assert line.startswith('steanet train: SIGTERM: stopped after step') and line.endswith(f'steanet train --resume {stopped}'), line
    assert 'Traceback' not in err.decode()
    assert json.loads(out.decode().strip().splitlines()[-1])['type'] == 'TrainingInterrupted'
    st = load_resume_state(stopped / 'resume.pt')
    assert st['epoch'] == 1 and 0 < st['pos'] < 16 and st['global_step'] >= sent    # the stop's own step, mid-epoch
    assert f'stopped after step {st["global_step"]} (epoch 2, batch {st["pos"]}/16)' in line
    client = mlflow.MlflowClient(f'sqlite:///{os.environ["STEANET_HOME"]}/mlruns/mlflow.db')
    assert client.get_run(st['run_id']).info.status == 'KILLED'
    res = _resume_equals(stopped, full, full_dir)
    assert res['run_id'] == st['run_id'] and client.get_run(st['run_id']).info.status == 'FINISHED'


def test_two_process_gloo_equals_one_process(synth_root, tmp_path):
    "torchrun --nproc_per_node 2 (gloo) with batch 2 per process = 1 process with batch 4."
    cfgp = tmp_path / 'cfg.yaml'
    save_config(make_config('demo', tiny_overrides(synth_root)), cfgp)
    one = last_json(cli(['train', '--config', str(cfgp), '--run-dir', str(tmp_path / 'one'), '--json']).stdout)
    script = tmp_path / 'run_steanet.py'
    script.write_text('import sys\nfrom steanet.cli import main\nsys.exit(main(sys.argv[1:]))\n')
    env = dict(os.environ, PYTHONPATH=f'{ROOT}{os.pathsep}{os.environ.get("PYTHONPATH", "")}', OMP_NUM_THREADS='1')
    # no --run-dir and tracking on: rank 0 names the run folder after its MLflow run, and every rank uses that folder
    r = subprocess.run([PY, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', str(script), 'train',
                        '--config', str(cfgp), '--set', 'train.batch_size=2', 'tracking.enabled=true', '--json'],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    two = last_json(r.stdout)
    assert Path(two['run_dir']).name.endswith(two['run_id'][:8])
    assert two['world_size'] == 2 and one['world_size'] == 1
    for k in ('val/top1', 'test/top1', 'best_val_top1'):
        assert two['metrics'][k] == pytest.approx(one['metrics'][k]), k
    for k in ('val/loss', 'train/epoch_loss', 'test/loss'):
        assert two['metrics'][k] == pytest.approx(one['metrics'][k], abs=1e-4), k
    a, b = load_st(tmp_path / 'one' / 'last.safetensors'), load_st(Path(two['run_dir']) / 'last.safetensors')
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r: return json.loads(r.read())


def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=30) as r: return json.loads(r.read())


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port(); d = tmp_path / 'server'; d.mkdir()
    exe = Path(PY).with_name('mlflow')
    p = subprocess.Popen([str(exe), 'server', '--host', '127.0.0.1', '--port', str(port),
                          '--backend-store-uri', f'sqlite:///{d}/mlflow.db', '--artifacts-destination', str(d / 'artifacts'),
                          '--workers', '1'],
                         stdout=subprocess.DEVNULL, stderr=open(d / 'server.log', 'w'), start_new_session=True,
                         env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY='true'))
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + '/health', timeout=2); break
            except Exception:
                if p.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f'mlflow server did not start: {(d / "server.log").read_text()[-3000:]}')
                time.sleep(0.5)
        yield url, d
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try: p.wait(20)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL)


def test_train_against_mlflow_server(synth_root, tmp_path, monkeypatch, mlflow_server):
    from steanet.train import fit
    url, d = mlflow_server
    monkeypatch.setenv('MLFLOW_TRACKING_URI', url)
    res = fit(make_config('demo', tiny_overrides(synth_root, **{'tracking.enabled': 'true',
                                                                'tracking.experiment': 'http-test', 'tracking.log_every': 1})),
              run_dir=tmp_path / 'run', progress=False)
    api = url + '/api/2.0/mlflow'
    exp = _get(api + '/experiments/get-by-name?experiment_name=http-test')['experiment']
    runs = _post(api + '/runs/search', {'experiment_ids': [exp['experiment_id']]})['runs']
    assert [r['info']['run_id'] for r in runs] == [res['run_id']]
    run = runs[0]; assert run['info']['status'] == 'FINISHED'
    params = {p['key']: p['value'] for p in run['data']['params']}
    tags = {t['key']: t['value'] for t in run['data']['tags']}
    metrics = {m['key']: m['value'] for m in run['data']['metrics']}
    assert params['train.lr'] == '0.003' and params['backbone.name'] == 'steanet-tiny'
    assert tags['variant'] == 'steanet' and tags['tunable_params'] == str(res['tunable_params']) and 'dataset_hash' in tags
    for k in ('val/top1', 'val/mean_class_acc', 'val/macro_f1', 'val/top5', 'test/top1', 'train/loss', 'train/lr',
              'perf/clips_per_s', 'perf/epoch_s', 'perf/peak_mem_mb'):
        assert k in metrics, k
    assert metrics['test/top1'] == pytest.approx(res['metrics']['test/top1'])
    q = urllib.parse.urlencode({'run_id': res['run_id'], 'metric_key': 'val/top1'})
    hist = _get(api + '/metrics/get-history?' + q)['metrics']
    assert sorted(m['step'] for m in hist) == [1, 2]
    q = urllib.parse.urlencode({'run_id': res['run_id'], 'metric_key': 'train/loss'})
    assert len(_get(api + '/metrics/get-history?' + q)['metrics']) == 8   # 4 steps x 2 epochs, log_every=1
    arts = {f['path'] for f in _get(api + '/artifacts/list?run_id=' + res['run_id']).get('files', [])}
    assert {'config.yaml', 'confusion.png', 'per_class.csv', 'test_predictions.csv', 'curves.png', 'checkpoint'} <= arts
    ck = {f['path'] for f in _get(api + '/artifacts/list?' + urllib.parse.urlencode(
        {'run_id': res['run_id'], 'path': 'checkpoint'}))['files']}
    assert ck == {'checkpoint/best.safetensors', 'checkpoint/best.json'}
    # the artifacts went to the server's store, not into the project
    assert list((d / 'artifacts').rglob('best.safetensors'))
    assert not (Path(os.environ['STEANET_HOME']) / 'mlruns').exists()

    # tracking.uri with a password (no MLFLOW_TRACKING_URI): it connects, no file, param or artifact holds it, and a
    # resume of the run (whose saved config holds it masked) connects again without being given it
    monkeypatch.delenv('MLFLOW_TRACKING_URI')
    secret_url = url.replace('http://', 'http://steanet:Pw0rdSECRET@')
    cfg = make_config('demo', tiny_overrides(synth_root, **{'tracking.enabled': 'true', 'tracking.uri': secret_url,
                                                            'train.epochs': 1}))
    res = fit(cfg, run_dir=tmp_path / 'run2', progress=False, test=False)
    res2 = fit(None, resume=str(tmp_path / 'run2'), overrides=['train.epochs=2'], progress=False, test=False)
    assert res2['run_id'] == res['run_id'] and len(res2['history']) == 2
    run = _post(url + '/api/2.0/mlflow/runs/search', {'experiment_ids': [
        _get(url + '/api/2.0/mlflow/experiments/get-by-name?experiment_name=demo')['experiment']['experiment_id']]})['runs']
    assert [r['info']['status'] for r in run] == ['FINISHED']
    assert {p['key']: p['value'] for p in run[0]['data']['params']}['tracking.uri'] == url.replace('http://', 'http://steanet:***@')
    leaks = [str(p) for p in tmp_path.rglob('*') if p.is_file() and b'Pw0rdSECRET' in p.read_bytes()]
    assert not leaks, leaks


@pytest.fixture(scope='module')
def tiny_run(synth_root, tmp_path_factory):
    "One `steanet train --json` run of the tiny config (1 epoch), shared by the eval/predict tests."
    d = tmp_path_factory.mktemp('cli')
    r = cli(['train', '--config', 'demo', '--set', *tiny_overrides(synth_root, **{'train.epochs': 1}),
             '--run-dir', str(d / 'run'), '--json'], env={'STEANET_HOME': str(d)})
    return d, last_json(r.stdout)


def test_cli_train_and_eval(tiny_run):
    d, res = tiny_run
    assert 0 <= res['metrics']['test/top1'] <= 1 and Path(res['best_checkpoint']).is_file()
    assert res['tunable_params'] > 0 and res['run_id'] is None           # tracking off in the tiny config
    ev = last_json(cli(['eval', '--checkpoint', str(d / 'run'), '--views', '2', '--json']).stdout)
    assert ev['views'] == 2 and ev['n'] == 8 and 0 <= ev['top1'] <= 1
    bad = cli(['eval', '--checkpoint', str(d / 'nope'), '--json'], check=False)
    assert bad.returncode == 1 and 'not found' in last_json(bad.stdout)['error']


def test_cli_predict_real_videos(tiny_run, tmp_path, fixtures_dir):
    "`predict` on the real fixture videos (H.264, MPEG-4 AVI) from a tiny-config checkpoint."
    d, res = tiny_run
    vids = sorted(str(p) for p in (fixtures_dir / 'videos').iterdir())
    out = tmp_path / 'pred.csv'
    pr = last_json(cli(['predict', '--checkpoint', res['best_checkpoint'], *vids, '--topk', '3', '--csv', str(out),
                        '--json']).stdout)
    assert len(pr['predictions']) == 3
    for p in pr['predictions']:
        assert p['error'] is None and len(p['top']) == 3
        assert sum(t['prob'] for t in p['top']) <= 1 + 1e-6 and p['top'][0]['prob'] >= p['top'][1]['prob']
    assert len(out.read_text().splitlines()) == 1 + 9
    bad = cli(['predict', '--checkpoint', res['best_checkpoint'], str(tmp_path / 'nope.mp4'), '--json'], check=False)
    assert bad.returncode == 1 and 'no such file' in last_json(bad.stdout)['predictions'][0]['error']


def two_split_lists(synth_root, ann: Path) -> list:
    """VE-8-shaped split lists (classInd.txt, trainlist0K.txt, testlist0K.txt) over the synthetic videos: split 1 is the
    synthetic train/test partition, split 2 swaps one video of each class between them; the overrides that read them."""
    from steanet.data import load_records
    dc = make_config('demo', [f'data.root={synth_root}']).data
    (tr, classes), (te, _) = load_records(dc, 'train'), load_records(dc, 'test')
    first = lambda rs: [next(r for r in rs if r.label == k) for k in range(len(classes))]
    moved_tr, moved_te = first(tr), first(te)
    parts = {1: (tr, te), 2: ([r for r in tr if r not in moved_tr] + moved_te, [r for r in te if r not in moved_te] + moved_tr)}
    ann.mkdir(parents=True)
    (ann / 'classInd.txt').write_text(''.join(f'{i + 1} {c}\n' for i, c in enumerate(classes)))
    name = lambda r: f'{r.class_name}/{Path(r.path).stem}'
    for k, (a, b) in parts.items():
        (ann / f'trainlist{k:02d}.txt').write_text(''.join(f'{name(r)} {r.label + 1}\n' for r in a))
        (ann / f'testlist{k:02d}.txt').write_text(''.join(f'{name(r)}\n' for r in b))
    return ['data.format=splits', f'data.annotations={ann}', f'data.root={Path(synth_root) / "videos"}']


def test_splits_nested_runs_and_fit_hooks(synth_root, tmp_path):
    "`run_splits`: one parent run with a nested child per split, mean/std logged; fit's hooks for the tuner."
    from steanet.train import run_splits, fit
    from steanet import tracking
    from steanet.config import ConfigError
    ov = tiny_overrides(synth_root, **{'tracking.enabled': 'true', 'train.epochs': 1, 'tracking.experiment': 'splits-test'})
    # the synthetic set has one partition: "splits" 1 and 2 would be the same split twice, refused before any run
    with pytest.raises(ConfigError, match='read the same test videos'): run_splits(make_config('demo', ov), [1, 2], progress=False)
    cfg = make_config('demo', ov + two_split_lists(synth_root, tmp_path / 'lists'))
    client, exp_id, _ = tracking.setup_mlflow(cfg)
    assert client.search_runs([exp_id]) == []
    res = run_splits(cfg, [1, 2], progress=False)
    assert set(res['splits']) == {1, 2} and 0 <= res['summary']['test/top1']['mean'] <= 1
    client, exp_id, _ = tracking.setup_mlflow(cfg)
    runs = client.search_runs([exp_id])
    kids = [r for r in runs if r.data.tags.get('mlflow.parentRunId') == res['run_id']]
    assert len(runs) == 3 and len(kids) == 2
    parent = client.get_run(res['run_id'])
    assert 'test/top1_mean' in parent.data.metrics and parent.info.status == 'FINISHED'
    # on_epoch_end sees every epoch's metrics; an exception closes the run as KILLED with a PRUNED tag
    class Pruned(Exception): pass
    try:
        import optuna; Pruned = optuna.TrialPruned
    except ImportError: pass
    seen = []
    def cb(epoch, m):
        seen.append((epoch, m['val/top1']))
        raise Pruned()
    with pytest.raises(Pruned):
        fit(make_config('demo', ov + ['train.epochs=2']), on_epoch_end=cb, parent_run_id=res['run_id'], progress=False,
            run_dir=tmp_path / 'pruned')
    assert [e for e, _ in seen] == [1]
    pr = [r for r in client.search_runs([exp_id]) if r.data.tags.get('steanet.status') == 'PRUNED']
    assert len(pr) == 1 and pr[0].info.status == 'KILLED' and pr[0].data.tags['mlflow.parentRunId'] == res['run_id']

