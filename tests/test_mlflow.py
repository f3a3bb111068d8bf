"""MLflow-native runs (issue 14): one tiny run trained through the demo's code path is shared by every test here: its
`runs:/<id>/model` in a fresh process equals `steanet predict` on a real fixture video, it serves over HTTP through
`mlflow models serve`, it is registered (`models:/NAME/1`) and usable as `--checkpoint`, eval/predict log runs nested
under it; a study written by `steanet tune` reads back through optuna-dashboard's HTTP API."""
import contextlib, io, json, os, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REGISTERED = 'steanet-test'


@pytest.fixture(scope='session')
def demo_run(tmp_path_factory):
    """`run_demo` (synthetic videos, the tiny tower pre-trained for a few steps, `fit`) for the `steanet` variant only,
    one epoch, tracked in its own store, registered as `steanet-test`, system metrics every second."""
    import torch
    from steanet.demo import run_demo
    from steanet.testing import project_home
    home = tmp_path_factory.mktemp('mlflow-home')
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        with project_home(home):
            r = run_demo(overrides=['train.epochs=1', 'data.num_frames=4', f'data.root={home / "videos"}',
                                    f'train.out_dir={home / "runs"}', f'tracking.register={REGISTERED}',
                                    'tracking.system_metrics_interval=1'],
                         variants=('steanet',), n_per_class=2, test_per_class=1, video_frames=8,
                         pretrain={'steps': 5, 'n_images': 256, 'batch_size': 32, 'cache': str(home / 'backbones')},
                         progress=False, publish=False)  # backbone_weights: the file the run used
    finally: torch.set_num_threads(threads)
    run = r['runs']['steanet']
    return {'home': home, 'uri': r['tracking_uri'], 'run_id': run['run_id'], 'experiment': r['experiment'],
            'run_dir': str(Path(run['checkpoint']).parent), 'weights': r['backbone_weights']}


@pytest.fixture
def store(demo_run, monkeypatch):
    "The shared run's store as this test's MLflow store (conftest unsets MLFLOW_TRACKING_URI for every test)."
    monkeypatch.setenv('MLFLOW_TRACKING_URI', demo_run['uri'])
    return demo_run


def _video(fixtures_dir) -> str: return str(fixtures_dir / 'videos' / 'demo_340x256_h264.mp4')


def _main(args) -> tuple:
    "`steanet <args>` in this process: (exit code, stdout, stderr)."
    from steanet.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def _probs(pred: dict) -> dict: return {t['class']: t['prob'] for t in pred['top']}


def test_run_model_in_a_fresh_process_equals_steanet_predict(store, fixtures_dir):
    "The acceptance check the lead runs after `steanet demo` (`check_run_models`), here on the shared tiny run."
    from mlflow import MlflowClient
    from steanet.testing import check_run_models
    # the model in a fresh interpreter; `steanet predict` here (the lead's check starts both fresh)
    res = check_run_models(store['uri'], _video(fixtures_dir), experiment=store['experiment'], latest=1, show=False,
                           fresh_predict=False)
    assert len(res) == 1 and res[0]['run_id'] == store['run_id']
    assert res[0]['n_classes'] == 8 and res[0]['max_abs_diff'] <= 1e-6 and abs(res[0]['sum'] - 1) <= 1e-5
    c = MlflowClient(store['uri']); run = c.get_run(store['run_id'])
    # the model is the run's (its experiment, not Default), carries the adapters, config and the small tower, and
    # names the backbone by sha256; the experiment opens on its runs in MLflow 3's UI; system metrics were sampled
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.tags['mlflow.experimentKind'] == 'custom_model_development'
    [m] = c.search_logged_models([exp.experiment_id])
    assert m.source_run_id == store['run_id'] and m.name == 'model' and m.status.name == 'READY'
    local = Path(m.artifact_location.replace('file://', ''))
    arts = sorted(p.name for p in (local / 'artifacts').iterdir())
    assert arts == sorted(['best.safetensors', 'best.json', 'config.yaml', Path(store['weights']).name]), arts
    meta = json.loads((local / 'artifacts' / 'best.json').read_text())
    from steanet.model import file_sha256
    assert meta['backbone']['sha256'] == file_sha256(store['weights'])
    assert any(k.startswith('system/cpu_utilization_percentage') for k in run.data.metrics), sorted(run.data.metrics)
    assert run.data.tags['steanet.model_uri'] == f"runs:/{store['run_id']}/model"


def test_registry_models_uri_checkpoints_and_logged_uses(store, fixtures_dir, tmp_path):
    """`models:/NAME/1` loads with pyfunc; it and `runs:/<id>/model` work as `--checkpoint` of predict and eval (the
    same numbers as the run folder); eval and predict log runs nested under the training run; a changed backbone file
    is refused; a missing model is one line and exit 1."""
    import mlflow, pandas as pd
    from mlflow import MlflowClient
    video = _video(fixtures_dir)
    c = MlflowClient(store['uri']); mlflow.set_tracking_uri(store['uri'])
    v = c.get_model_version(REGISTERED, '1'); assert v.run_id == store['run_id']
    from steanet.serving import video_frame
    row = mlflow.pyfunc.load_model(f'models:/{REGISTERED}/1').predict(video_frame([video])).iloc[0]
    rc, out, _ = _main(['predict', '--json', '--topk', '8', '--checkpoint', store['run_dir'], video])
    ref = _probs(json.loads(out.strip().splitlines()[-1])['predictions'][0]); assert rc == 0
    assert max(abs(row[f'prob_{k}'] - p) for k, p in ref.items()) <= 1e-6
    c.set_registered_model_alias(REGISTERED, 'champion', '1')
    for ck in (f'models:/{REGISTERED}/1', f'models:/{REGISTERED}/champion', f"runs:/{store['run_id']}/model"):
        rc, out, err = _main(['predict', '--json', '--topk', '8', '--checkpoint', ck, video])
        assert rc == 0, err
        got = _probs(json.loads(out.strip().splitlines()[-1])['predictions'][0])
        assert max(abs(got[k] - p) for k, p in ref.items()) <= 1e-6, ck
    rc, out, err = _main(['eval', '--json', '--checkpoint', f"runs:/{store['run_id']}/model"]); assert rc == 0, err
    ev = json.loads(out.strip().splitlines()[-1])
    rc, out, _ = _main(['eval', '--json', '--no-mlflow', '--checkpoint', store['run_dir']])
    assert json.loads(out.strip().splitlines()[-1])['top1'] == ev['top1'] and 'run_id' not in json.loads(out.strip().splitlines()[-1])
    # the logged uses: nested under the training run, with metrics and files
    uses = {r.data.tags.get('steanet.kind'): r for r in c.search_runs([c.get_run(store['run_id']).info.experiment_id])
            if r.data.tags.get('steanet.kind') in ('eval', 'predict')}
    assert set(uses) == {'eval', 'predict'}
    for kind, r in uses.items():
        assert r.data.tags['mlflow.parentRunId'] == store['run_id'] and r.info.status == 'FINISHED'
        files = {a.path for a in c.list_artifacts(r.info.run_id)}
        assert f'{kind}_predictions.csv' in files and (kind == 'predict' or {'confusion.png', 'per_class.csv'} <= files), files
    assert uses['eval'].info.run_id == ev['run_id'] and uses['eval'].data.metrics['eval/top1'] == ev['top1']
    assert uses['predict'].data.metrics['predict/n_videos'] == 1
    # a backbone file that is not the recorded one is refused when the model loads
    local = Path(mlflow.artifacts.download_artifacts(f'models:/{REGISTERED}/1', dst_path=str(tmp_path / 'm')))
    bb = local / 'artifacts' / Path(store['weights']).name
    data = bytearray(bb.read_bytes()); data[-1] ^= 1; bb.write_bytes(bytes(data))
    with pytest.raises(Exception, match='differs'): mlflow.pyfunc.load_model(str(local))
    rc, _, err = _main(['predict', '--checkpoint', 'models:/no-such-model/1', video])
    assert rc == 1 and 'no such MLflow model' in err and len(err.strip().splitlines()) == 1, err


def test_runs_log_their_datasets(store):
    """The training run logs its train / val / test records as MLflow datasets (digest = the split's records hash,
    source = the data root); an eval run logs the split it read, with the same digest; search_runs finds both by it."""
    from mlflow import MlflowClient
    from steanet.config import load_config
    from steanet.inputs import dataset_source, run_splits_of
    from steanet.tracking import records_hash
    c = MlflowClient(store['uri'])
    def inputs(rid): return {dict((t.key, t.value) for t in i.tags)['mlflow.data.context']: i.dataset
                             for i in c.get_run(rid).inputs.dataset_inputs}
    got = inputs(store['run_id'])
    cfg = load_config(Path(store['run_dir']) / 'config.yaml'); s = run_splits_of(cfg)
    assert {k: d.digest for k, d in got.items()} == {k: records_hash(getattr(s, k)) for k in ('train', 'val', 'test')}
    assert {d.name for d in got.values()} == {f'{cfg.data.dataset}-{k}' for k in got}
    assert cfg.data.store and all(json.loads(d.source) == {'uri': dataset_source(cfg)} for d in got.values())  # the store
    rc, out, err = _main(['eval', '--json', '--checkpoint', store['run_dir']]); assert rc == 0, err
    ev = json.loads(out.strip().splitlines()[-1])
    assert {k: d.digest for k, d in inputs(ev['run_id']).items()} == {'test': got['test'].digest}
    exp = c.get_run(store['run_id']).info.experiment_id
    hits = {r.info.run_id for r in c.search_runs([exp], filter_string=f"dataset.digest = '{got['test'].digest}'")}
    assert {store['run_id'], ev['run_id']} <= hits


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@contextlib.contextmanager
def _server(cmd, port: int, ready: str, env=None, timeout: float = 180):
    "A server process on 127.0.0.1:`port`, up once GET `ready` answers; stopped (its process group) on exit."
    import tempfile
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get('PATH', '')])   # the venv's uvicorn, gunicorn
    pypath = os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])   # this checkout's steanet (the model's class)
    log = tempfile.TemporaryFile(mode='w+')   # a file, not a pipe: a chatty server never blocks on a full pipe
    p = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS='1', PATH=path, PYTHONPATH=pypath, **(env or {})),
                         stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        t0 = time.time()
        while True:
            if p.poll() is not None:
                log.seek(0); raise AssertionError(f'{cmd[:3]} exited {p.returncode}:\n{log.read()[-3000:]}')
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}{ready}', timeout=2): break
            except OSError:
                if time.time() - t0 > timeout: raise AssertionError(f'{cmd[:3]}: not up after {timeout} s')
                time.sleep(0.5)
        yield p
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try: p.wait(20)
            except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait(10)
        log.close()
    assert p.poll() is not None


def _strict_json(text: str):
    "JSON as the standard has it: NaN / Infinity are refused (Python's json accepts them by default)."
    def bad(c): raise ValueError(f'not JSON: {c}')
    return json.loads(text, parse_constant=bad)


def _post(url: str, body: dict, timeout: float = 300) -> tuple:
    "(status, body text) of a JSON POST; an HTTP error's body too."
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: return r.status, r.read().decode()
    except urllib.error.HTTPError as e: return e.code, e.read().decode()


LARGE = 24   # the row limit of the served-model test's server, and its large batch (every row a good video)


def _tree_cpu(pid: int) -> tuple:
    """`(CPU seconds, command lines)` of process `pid` and every descendant alive now (user + system, with the children
    each has waited for)."""
    import psutil
    total, cmds = 0.0, []
    root = psutil.Process(pid)
    for q in [root, *root.children(recursive=True)]:
        try:
            t = q.cpu_times(); total += t.user + t.system + t.children_user + t.children_system
            cmds.append(' '.join(q.cmdline()))
        except psutil.NoSuchProcess: pass
    return total, cmds


def _idle_after(pid: int, seconds: float = 3.0) -> float:
    "CPU seconds the server's process tree spends over `seconds` of wall time with no request in flight."
    before, _ = _tree_cpu(pid); time.sleep(seconds)
    return _tree_cpu(pid)[0] - before


def test_steanet_serve_answers_like_predict_and_keeps_the_contract(store, fixtures_dir, tmp_path):
    """`steanet serve <run id> --media-root DIR` (mlflow models serve --env-manager local, 127.0.0.1, a free port): a
    real video sent as base64 and named as a path under the media root both get `steanet predict`'s probabilities;
    escapes, junk and a symlink out of the root get one-line errors in their own rows (valid JSON, no traceback, no
    server path); a large batch (the row limit, the three fixture videos as paths and as bytes) gets one answer per row,
    in order, each the numbers of `steanet predict` and of `steanet eval` (one inference function, to 1e-6), and leaves
    no decoder running and the server idle; a request of a few hundred rows (over the limit) is refused row by row
    without decoding. One server for all of it: `steanet serve` is `mlflow models serve -m runs:/<id>/model
    --env-manager local` (`serving.serve_command`), so this is also the MLflow-native serving check of issue 14."""
    import base64, shutil
    from steanet.testing import cli_predictions
    media = tmp_path / 'media'; media.mkdir(); video = media / 'clip.mp4'
    shutil.copy(_video(fixtures_dir), video); (media / 'out.mp4').symlink_to(_video(fixtures_dir))
    kinds = {'clip.mp4': video}                              # the three fixture videos (H.264 MP4s, an MPEG-4 AVI)
    for name in ('short_32frames.mp4', 'test_320x240_mpeg4.avi'):
        kinds[name] = media / name; shutil.copy(fixtures_dir / 'videos' / name, media / name)
    refs = {k: {t['class']: t['prob'] for t in p['top']}
            for k, p in zip(kinds, cli_predictions(store['run_dir'], list(kinds.values()), fresh=False))}
    from steanet.data import VideoRecord
    from steanet.infer import eval_checkpoint
    ev = eval_checkpoint(store['run_dir'], records=[VideoRecord(str(v), 0, 'x') for v in kinds.values()],
                         return_predictions=True, overrides=['data.store='])   # loose files, decoded (the run read its store)
    assert (ev['n_videos'], ev['n_bad']) == (3, 0)
    evaluated = {Path(pr['video']).name: {t['class']: t['prob'] for t in pr['top']} for pr in ev['predictions']}
    assert sorted(evaluated) == sorted(refs) and all(len(refs[k]) == 8 for k in refs)
    for k, want in refs.items(): assert max(abs(evaluated[k][c] - q) for c, q in want.items()) <= 1e-6, k
    ref = refs['clip.mp4']
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / 'steanet'), 'serve', store['run_id'], '--port', str(port),
           '--media-root', str(media), '--max-rows', str(LARGE), '--decode-timeout', '120']
    b64s = {k: base64.b64encode(v.read_bytes()).decode() for k, v in kinds.items()}
    rows = [['sent.mp4', b64s['clip.mp4']], ['clip.mp4', None], ['../../../etc/passwd', None], ['/etc/hostname', None],
            ['out.mp4', None], ['junk', base64.b64encode(b'no video here' * 50).decode()]]
    # the large batch: row i is fixture video i % 3, every third row sent as bytes, the others named under the media root;
    # each row has its own name (a link inside the root), so the answers' order is checked by name and by numbers
    order, large = list(kinds), []
    for i in range(LARGE):
        kind = order[i % 3]; name = f'{i:02d}-{kind}'
        (media / name).symlink_to(kind)
        large.append([name, b64s[kind] if i % 3 == 2 else None])
    with _server(cmd, port, '/ping', env={'MLFLOW_TRACKING_URI': store['uri']}) as p:
        status, text = _post(f'http://127.0.0.1:{port}/invocations',
                             {'dataframe_split': {'columns': ['video', 'video_b64'], 'data': rows}})
        large_status, large_text = _post(f'http://127.0.0.1:{port}/invocations',
                                         {'dataframe_split': {'columns': ['video', 'video_b64'], 'data': large}})
        _, left = _tree_cpu(p.pid); idle = _idle_after(p.pid)
        big_status, big = _post(f'http://127.0.0.1:{port}/invocations',
                                {'dataframe_split': {'columns': ['video'], 'data': [['clip.mp4']] * 300}})
        idle_after_big = _idle_after(p.pid)
    assert status == 200, text[:2000]
    out = _strict_json(text)['predictions']
    assert [r['video'] for r in out] == [r[0] for r in rows]
    for r in out[:2]:                                        # bytes and a path under the media root: predict's numbers
        assert r['error'] == '', r['error']
        assert max(abs(r[f'prob_{k}'] - p) for k, p in ref.items()) <= 1e-6
        assert r['label'] == max(ref, key=ref.get)
    for r in out[2:]:
        assert r['error'] and r['prob'] is None and r['label'] == '', r
    assert out[2]['error'] == out[3]['error'] == out[4]['error']     # outside, absolute, symlink out: told apart by nothing
    assert 'Traceback' not in text and str(tmp_path) not in text and str(fixtures_dir) not in text
    assert large_status == 200, large_text[:2000]
    got = _strict_json(large_text)['predictions']
    assert [r['video'] for r in got] == [r[0] for r in large]              # one answer per row, in the rows' order
    for r in got:
        want = refs[r['video'].split('-', 1)[1]]
        assert r['error'] == '' and r['label'] == max(want, key=want.get), r
        assert abs(sum(r[f'prob_{k}'] for k in want) - 1) <= 1e-5
        assert max(abs(r[f'prob_{k}'] - q) for k, q in want.items()) <= 1e-6, r['video']
    assert not [c for c in left if '_check_worker' in c], left            # the request's decoder worker is gone
    assert idle < 1.0 and idle_after_big < 1.0, (idle, idle_after_big)     # CPU seconds over 3 s: nothing left burning
    assert big_status == 200
    refused = _strict_json(big)['predictions']
    assert len(refused) == 300 and all(f'at most {LARGE}' in r['error'] and r['prob'] is None for r in refused)


def test_optuna_dashboard_shows_a_study_of_steanet_tune(tmp_path, monkeypatch):
    """`steanet tune` (two one-epoch trials) writes a study with its plots/best config attached as Optuna artifacts;
    optuna-dashboard on a free loopback port returns the study, its trials and those artifacts over its HTTP API;
    `--retrain-best --register NAME` registers a model that loads by `models:/NAME/1`."""
    from steanet.synthetic import make_synthetic_dataset
    videos = make_synthetic_dataset(tmp_path / 'videos', n_per_class=2, seed=1, size=32, frames=8)
    study = 'dash-test'
    common = ['--config', 'demo', '--study', study, '--json', '--set', f'data.root={videos}', 'data.num_frames=4',
              'train.batch_size=8', 'tracking.log_checkpoint=false', 'tracking.system_metrics=false',
              'tracking.log_model=false']   # the trials' models are not needed here; --register turns it on for the retrain
    rc, out, err = _main(['tune', *common, '--n-trials', '2', '--epochs', '1']); assert rc == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1]); assert summary['dashboard_artifacts'] >= 2
    rc, out, err = _main(['tune', *common, '--retrain-best', '--retrain-epochs', '1', '--register', 'steanet-tuned'])
    assert rc == 0, err[-3000:]
    import mlflow, pandas as pd
    home = Path(os.environ['STEANET_HOME'])
    mlflow.set_tracking_uri(f'sqlite:///{home}/mlruns/mlflow.db')
    some = str(next((videos / 'test').rglob('*.mp4')) if (videos / 'test').exists() else next(videos.rglob('*.mp4')))
    from steanet.serving import video_frame
    df = mlflow.pyfunc.load_model('models:/steanet-tuned/1').predict(video_frame([some]))
    assert df.loc[0, 'error'] == '' and abs(df.filter(like='prob_').iloc[0].sum() - 1) <= 1e-5
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / 'optuna-dashboard'), '--host', '127.0.0.1', '--port', str(port),
           '--artifact-dir', str(home / 'mlruns' / 'optuna-artifacts'), f'sqlite:///{home}/mlruns/optuna.db']
    with _server(cmd, port, '/api/studies', timeout=60):
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/studies', timeout=10) as r: studies = json.loads(r.read())
        [s] = [s for s in studies['study_summaries'] if s['study_name'] == study]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{s['study_id']}", timeout=30) as r:
            detail = json.loads(r.read())
        names = {a['filename'] for a in detail['artifacts']}
        art = next(a for a in detail['artifacts'] if a['filename'] == 'best_config.yaml')
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/artifacts/{s['study_id']}/{art['artifact_id']}", timeout=10) as r:
            best_yaml = r.read().decode()
    assert len(detail['trials']) == 2 and {t['state'] for t in detail['trials']} <= {'Complete', 'Pruned'}, detail['trials']
    assert 'best_config.yaml' in names and 'trials.csv' in names, names
    assert 'adapters:' in best_yaml and 'data:' in best_yaml


def test_downloaded_models_are_private_and_weights_adopted_by_sha256(store, tmp_path, monkeypatch):
    """Issue 26: `runs:/<id>/model` as `--checkpoint` downloads into a fresh 0700 folder of the per-user cache (never a
    shared /tmp path another account can seed), and the backbone file it carries is adopted only when its sha256 is
    the one the checkpoint names: a tampered file in the store is refused in one line."""
    from mlflow import MlflowClient
    from steanet.checkpoint import CheckpointError
    from steanet.tracking import resolve_checkpoint
    cache = tmp_path / 'private'; monkeypatch.setenv('STEANET_CACHE', str(cache))
    ref = f"runs:/{store['run_id']}/model"
    ck, bb = resolve_checkpoint(ref)
    assert Path(ck).is_relative_to(cache / 'models') and Path(bb).is_relative_to(cache / 'models'), (ck, bb)
    for d in (cache, cache / 'models', Path(ck).parents[2]):
        assert d.stat().st_mode & 0o777 == 0o700, d
    assert resolve_checkpoint(ref)[0] != ck                       # every use downloads afresh: nothing stale is read
    assert resolve_checkpoint(ref, backbone_weights='/x.safetensors')[1] == '/x.safetensors'
    c = MlflowClient(store['uri'])
    [m] = c.search_logged_models([c.get_run(store['run_id']).info.experiment_id])
    carried = Path(m.artifact_location.replace('file://', '')) / 'artifacts' / Path(store['weights']).name
    saved = carried.read_bytes()
    try:
        carried.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
        with pytest.raises(CheckpointError, match='not the ones its checkpoint names'): resolve_checkpoint(ref)
    finally: carried.write_bytes(saved)
