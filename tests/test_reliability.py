"""Reliability and security of `steanet train | eval | predict | tune` (issue 15): no secret in any file, store or console
line; run folders never overwritten; `--resume --set` applies only what is safe mid-run; SIGTERM leaves no MLflow run
RUNNING; each foreseeable failure is one line and exit 1; CSVs through the csv module. Tiny random backbone, tiny
synthetic videos, one epoch; most commands run in this process through `steanet.cli.main` (the console script's entry)."""
import contextlib, csv, errno, io, json, os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest

from steanet.cli import main
from steanet.testing import tiny_overrides

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]
SECRET = 'Pw0rdSECRET'                                    # what `grep -r` must not find


def tiny(root, **kw):
    "The shared tiny run (`testing.tiny_overrides`), one epoch, no loader workers."
    return tiny_overrides(root, **{'data.num_workers': 0, 'train.epochs': 1, **kw})


def call(argv, env=None):
    "`(exit code, stdout, stderr)` of `steanet <argv>` in this process."
    o, e = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e): rc = main(argv)
    finally:
        for k, v in saved.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    return rc, o.getvalue(), e.getvalue()


def one_line_error(rc, err, *words):
    "Exit 1, exactly one stderr line `steanet <cmd>: error: ...` naming `words`, no traceback."
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and 'Traceback' not in err, (rc, err[-3000:])
    assert lines[0].startswith('steanet ') and ': error: ' in lines[0], lines
    for w in words: assert str(w) in lines[0], (w, lines[0])
    return lines[0]


def files_with(root: Path, needle: str) -> list:
    "Every file under `root` whose bytes contain `needle` (what `grep -r` finds)."
    return [str(p) for p in Path(root).rglob('*') if p.is_file() and needle.encode() in p.read_bytes()]


def snapshot(d: Path) -> dict:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(d).rglob('*')) if p.is_file()}


def mlflow_client(home):
    from mlflow import MlflowClient
    return MlflowClient(f'sqlite:///{home}/mlruns/mlflow.db')


# ---------------------------------------------------------------------------------------------------------------------
def test_train_secret_nowhere_run_folder_kept_resume_set(synth_root, tmp_path):
    "A password in a URL-valued field is masked everywhere; an existing run folder is refused byte for byte;"
    "`--resume --set` applies the safe changes and lists the refused ones; `--overwrite` replaces the run."
    from steanet.config import make_config
    from steanet.tracking import OWNER_TAG, setup_mlflow
    run = tmp_path / 'run'
    url = f'postgresql+psycopg://u:{SECRET}@db.example:5432/optuna'
    args = ['train', '--config', 'demo', '--set', *tiny(synth_root, **{'tracking.enabled': 'true', 'tune.storage': url}),
            '--run-dir', str(run), '--json']
    # a run whose process was SIGKILLed (a pid that is gone) stays RUNNING until the next run in the store closes it
    p = subprocess.Popen([PY, '-c', 'pass']); p.wait()
    cl, exp, _ = setup_mlflow(make_config('demo', tiny(synth_root, **{'tracking.enabled': 'true'})))
    gone = cl.create_run(exp, tags={OWNER_TAG: json.dumps({'host': socket.gethostname(), 'pid': p.pid, 'start': '0'})})
    rc, out, err = call(args)
    assert rc == 0, err[-3000:]
    r = cl.get_run(gone.info.run_id)
    assert r.info.status == 'KILLED' and 'died' in r.data.tags['steanet.error']
    res = json.loads(out.strip().splitlines()[-1])
    assert SECRET not in out + err and not files_with(tmp_path, SECRET)       # run folder, MLflow db + artifacts
    r = cl.get_run(res['run_id'])
    assert r.data.params['tune.storage'] == 'postgresql+psycopg://u:***@db.example:5432/optuna'
    assert r.info.status == 'FINISHED' and not any(SECRET in v for v in {**r.data.params, **r.data.tags}.values())
    n_runs = len(cl.search_runs([r.info.experiment_id]))

    # the same --run-dir again: refused, no byte of the folder changed, no MLflow run opened
    before = snapshot(run)
    one_line_error(*call(args)[::2], run, '--resume', '--overwrite')
    # --resume with changes that would make it another run: refused, the keys listed
    one_line_error(*call(['train', '--resume', str(run), '--set', 'train.lr=0.1', 'adapters.variant=aim'])[::2],
                   'train.lr', 'adapters.variant', 'train.epochs')
    assert snapshot(run) == before and len(cl.search_runs([r.info.experiment_id])) == n_runs

    # --resume with a safe change (one more epoch): the same MLflow run continues, still no secret anywhere
    rc, out, err = call(['train', '--resume', str(run), '--set', 'train.epochs=2', '--json', '--no-test'])
    assert rc == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])['run_id'] == res['run_id']
    assert json.loads((run / 'last.json').read_text())['epoch'] == 2
    assert cl.get_run(res['run_id']).info.status == 'FINISHED'
    assert SECRET not in out + err and not files_with(tmp_path, SECRET)

    # --overwrite: explicitly a new run in that folder
    rc, out, err = call(args + ['--overwrite', '--no-test'])
    assert rc == 0, err[-3000:]
    new = json.loads(out.strip().splitlines()[-1])
    assert new['run_id'] != res['run_id'] and json.loads((run / 'last.json').read_text())['epoch'] == 1
    assert not (run / 'test_predictions.csv').exists()          # the old run's files went with it
    assert not cl.search_runs([exp], filter_string="attributes.status = 'RUNNING'")


def sigterm_when(ready, timeout: float = 240):
    "A thread that sends SIGTERM to this process once `ready()` holds (as `kill PID` or a scheduler would)."
    import threading
    def watch():
        t0 = time.time()
        while time.time() - t0 < timeout:
            if ready(): os.kill(os.getpid(), signal.SIGTERM); return
            time.sleep(0.05)
    t = threading.Thread(target=watch, daemon=True); t.start()
    return t


def test_sigterm_during_train_ends_run_killed(synth_root, tmp_path):
    "SIGTERM mid-training: exit 130 with one line, the MLflow run KILLED (none RUNNING), the run resumable."
    run = tmp_path / 'run'
    watcher = sigterm_when(lambda: (run / 'resume.pt').exists())       # after the first epoch, 199 to go
    rc, out, err = call(['train', '--config', 'demo', '--quiet', '--run-dir', str(run), '--set',
                         *tiny(synth_root, **{'tracking.enabled': 'true', 'train.epochs': 200})])
    watcher.join()
    assert rc == 130 and err.strip().splitlines()[-1].startswith('steanet train: SIGTERM: stopped after step'), err[-3000:]
    assert 'Traceback' not in err
    cl = mlflow_client(tmp_path)
    runs = cl.search_runs([e.experiment_id for e in cl.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == 'KILLED', [(r.info.run_id, r.info.status) for r in runs]
    assert runs[0].data.tags['steanet.status'] == 'KILLED' and (run / 'resume.pt').is_file()


# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def ckpt(synth_root, tmp_path_factory):
    "One tiny trained run folder (tracking off), shared by the checkpoint cases."
    d = tmp_path_factory.mktemp('ckpt')
    rc, out, err = call(['train', '--config', 'demo', '--set', *tiny(synth_root), '--run-dir', str(d / 'run'), '--quiet'],
                        env={'STEANET_HOME': str(d)})
    assert rc == 0, err[-3000:]
    return d / 'run'


def test_bad_checkpoints_one_line(ckpt, tmp_path):
    "A truncated safetensors, a release .pth, a best.json without class_names: one line naming the file, exit 1."
    import torch
    data = (ckpt / 'best.safetensors').read_bytes()
    (tmp_path / 'cut.safetensors').write_bytes(data[:len(data) // 2])
    shutil.copy(ckpt / 'best.json', tmp_path / 'cut.json')
    one_line_error(*call(['eval', '--checkpoint', str(tmp_path / 'cut.safetensors')])[::2],
                   tmp_path / 'cut.safetensors', 'truncated')
    torch.save({'state_dict': {'w': torch.zeros(2)}}, tmp_path / 'release.pth')
    rc, out, err = call(['predict', '--checkpoint', str(tmp_path / 'release.pth'), 'x.mp4', '--json'])
    one_line_error(rc, err, tmp_path / 'release.pth', 'convert-checkpoint')
    assert json.loads(out.strip().splitlines()[-1])['type'] == 'CheckpointError'
    shutil.copy(ckpt / 'best.safetensors', tmp_path / 'nocls.safetensors')
    meta = json.loads((ckpt / 'best.json').read_text()); del meta['class_names']
    (tmp_path / 'nocls.json').write_text(json.dumps(meta))
    one_line_error(*call(['eval', '--checkpoint', str(tmp_path / 'nocls.json')])[::2], tmp_path / 'nocls.json',
                   'class_names')


@contextlib.contextmanager
def tiny_tmpfs(path: Path, opts: str):
    "A real tmpfs mounted at `path` (root only, where mounts are allowed); yields whether it is mounted."
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', opts, 'tmpfs', str(path)], capture_output=True)
    if r.returncode: yield False; return
    try: yield True
    finally: subprocess.run(['umount', '-l', str(path)], capture_output=True)


def test_read_only_artifact_root_and_full_disk_one_line(synth_root, tmp_path, monkeypatch):
    "The artifact root cannot be written, the disk fills up mid-run: one line naming the path and the fix, exit 1."
    ro = tmp_path / 'ro'
    with contextlib.ExitStack() as stack:
        if os.geteuid() != 0: ro.mkdir(); ro.chmod(0o555); stack.callback(ro.chmod, 0o755)
        elif not stack.enter_context(tiny_tmpfs(ro, 'ro,size=1m')):   # root writes through permissions: a read-only
            ro = Path('/sys/steanet-read-only')                        # file system (sysfs where tmpfs cannot mount)
        rc, out, err = call(['train', '--config', 'demo', '--set',
                             *tiny(synth_root, **{'tracking.enabled': 'true', 'tracking.artifact_root': str(ro / 'art')}),
                             '--run-dir', str(tmp_path / 'run1'), '--quiet'])
        one_line_error(rc, err, ro / 'art' if ro.name == 'ro' else ro, 'tracking.artifact_root')
    full = tmp_path / 'full'
    with tiny_tmpfs(full, 'size=64k') as mounted:
        if not mounted:                             # no tmpfs: the write layer says ENOSPC, as a full disk does
            monkeypatch.setattr(os, 'fsync', lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
        rc, out, err = call(['train', '--config', 'demo', '--set', *tiny(synth_root), '--run-dir', str(full / 'run'), '--quiet'])
        one_line_error(rc, err, 'No space left on device', full / 'run', 'free space')


def test_unreachable_tracking_store_in_tune_one_line(synth_root, tmp_path):
    "tune against an HTTP server or a PostgreSQL store that is not there: one line within seconds, the password masked."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    for uri in (f'http://127.0.0.1:{port}', f'postgresql+psycopg://u:{SECRET}@127.0.0.1:{port}/mlflow'):
        t0 = time.time()
        rc, out, err = call(['tune', '--config', 'demo', '--set', *tiny(synth_root, **{'tracking.enabled': 'true'}),
                             '--n-trials', '1', '--no-plots'], env={'MLFLOW_TRACKING_URI': uri})
        one_line_error(rc, err, 'not reachable', f'127.0.0.1:{port}')
        assert SECRET not in out + err and time.time() - t0 < 30
    assert not (tmp_path / 'mlruns' / 'optuna.db').exists()          # the store is checked before the study is touched


def test_csv_rows_stay_rows(ckpt, synth_root, tmp_path):
    'A video named a",b<newline>c.mp4 stays one row per rank in `predict --csv` and in the test predictions CSV.'
    name = tmp_path / 'a",b\nc.mp4'
    shutil.copy(next(Path(synth_root).rglob('*.mp4')), name)
    rc, out, err = call(['predict', '--checkpoint', str(ckpt), str(name), '--topk', '2', '--csv', str(tmp_path / 'p.csv')])
    assert rc == 0, err[-3000:]
    rows = list(csv.DictReader(io.StringIO((tmp_path / 'p.csv').read_text(), newline='')))
    assert [r['video'] for r in rows] == [str(name)] * 2 and [r['rank'] for r in rows] == ['1', '2']
    from steanet.tracking import write_predictions_csv
    preds = [{'video': str(name), 'label': 0, 'true_class': 'x,"y"', 'top': [{'class': 'x,"y"', 'prob': 1.0}], 'error': None},
             {'video': 'ok.mp4', 'label': 1, 'true_class': 'z', 'top': [], 'error': 'DecodeError: a\nb'}]
    rows = list(csv.DictReader(io.StringIO(write_predictions_csv(tmp_path / 't.csv', preds).read_text(), newline='')))
    assert [(r['video'], r['true_class'], r['error']) for r in rows] == [(str(name), 'x,"y"', ''), ('ok.mp4', 'z', 'DecodeError: a\nb')]


def _partial_copy(src: Path, dst: Path, frac: float = 0.6) -> Path:
    "`src` (H.264 MP4, frame data before the index) with the last 40% of its frame data zeroed: it decodes only in part."
    b = Path(src).read_bytes(); m, v = b.find(b'mdat') + 8, b.find(b'moov')
    assert 0 < m < v
    cut = m + int((v - m) * frac)
    dst.write_bytes(b[:cut] + bytes(v - cut) + b[v:])
    return dst


def test_partial_video_counted_and_ruled(ckpt, synth_root, tmp_path, caplog):
    "A partly decodable video: used, warned once with its path and counted (predict, train) or, with skip, left out."
    import logging
    caplog.set_level(logging.WARNING)       # tests/test_model.py quiets the root logger for the whole session
    from steanet.config import make_config
    from steanet.data import VideoRecord, load_records
    from steanet.train import fit
    part = _partial_copy(sorted(Path(synth_root).rglob('*.mp4'))[0], tmp_path / 'part.mp4')
    rc, out, err = call(['predict', '--checkpoint', str(ckpt), str(part), '--json'])
    assert rc == 0, err[-3000:]
    (p,) = json.loads(out.strip().splitlines()[-1])['predictions']
    assert p['n_partial'] == 1 and p['error'] is None and len(p['top']) == 3
    warned = [r.getMessage() for r in caplog.records if 'partly decodable video' in r.getMessage()]
    assert len(warned) == 1 and str(part) in warned[0] and '(partly decodable)' in err, (warned, err)
    rc, out, err = call(['predict', '--checkpoint', str(ckpt), str(part), '--partial-videos', 'skip', '--json'])
    (p,) = json.loads(out.strip().splitlines()[-1])['predictions']
    assert rc == 1 and 'partly decodable' in p['error'] and not p['top']
    cfg = make_config('demo', tiny(synth_root))
    train, _ = load_records(cfg.data, 'train')
    train = [VideoRecord(str(part), train[0].label, train[0].class_name)] + train[1:]
    res = fit(cfg, train_records=train, run_dir=tmp_path / 'run', progress=False, test=False)   # partial_videos=use
    h = res['history'][0]                       # (skip: substituted and counted as bad, see 03d_datasets)
    assert h['data/partial_items'] >= 1 and h['data/bad_items'] == 0, h


def test_outputs_never_replace_what_is_there(ckpt, synth_root, tmp_path):
    """`predict --csv`, `explain --out`, `check-data --report`, `prepare-data --out` onto what is already there (a run's
    own best.json, an earlier explanation, an earlier report, one's videos): exit 1, one line, not a byte changed,
    checked before any work; `--overwrite` replaces the first three (a store never goes into a foreign folder)."""
    video = str(next(Path(synth_root).rglob('*.mp4')))
    before = snapshot(ckpt)
    one_line_error(*call(['predict', video, '--checkpoint', str(ckpt), '--csv', str(ckpt / 'best.json'), '--no-mlflow'])[::2],
                   ckpt / 'best.json', 'exists and is kept', '--overwrite')
    assert snapshot(ckpt) == before                                        # the run's metadata is intact
    out = tmp_path / 'p.csv'; out.write_text('mine')
    assert call(['predict', video, '--checkpoint', str(ckpt), '--csv', str(out), '--no-mlflow', '--overwrite'])[0] == 0
    assert out.read_text().startswith('video,')
    ex = tmp_path / 'ex'; ex.mkdir(); (ex / 'summary.json').write_text('{"earlier": 1}')
    one_line_error(*call(['explain', video, '--checkpoint', str(ckpt), '--out', str(ex), '--method', 'saliency'])[::2],
                   ex, 'earlier explanation', '--overwrite')
    assert [p.name for p in ex.iterdir()] == ['summary.json'] and (ex / 'summary.json').read_text() == '{"earlier": 1}'
    rep = tmp_path / 'r.csv'; rep.write_text('mine')
    one_line_error(*call(['check-data', str(synth_root), '--report', str(rep), '--workers', '1'])[::2], rep, 'exists and is kept')
    assert rep.read_text() == 'mine'
    src = snapshot(synth_root)
    one_line_error(*call(['prepare-data', '--config', 'demo', '--set', f'data.root={synth_root}', '--out', str(synth_root),
                          '--workers', '0'])[::2], synth_root, 'not a store and not empty')
    assert snapshot(synth_root) == src


def test_a_run_that_fails_with_loader_workers_exits(synth_root, tmp_path):
    """An error in the middle of a run whose loader workers are alive (they ignore SIGTERM, by design) ends the process:
    multiprocessing's exit handler would SIGTERM them and wait forever; `kill_loader_workers` runs first."""
    code = ('import sys\nfrom steanet.config import make_config\nfrom steanet.train import fit\n'
            'def boom(epoch, m): raise RuntimeError("boom in on_epoch_end")\n'
            'fit(make_config("demo", sys.argv[1:]), on_epoch_end=boom, run_dir=sys.argv[0] + ".run", progress=False)\n')
    script = tmp_path / 'fail.py'; script.write_text(code)
    t0 = time.time()
    r = subprocess.run([PY, str(script), *tiny(synth_root, **{'data.num_workers': 2})], capture_output=True, text=True,
                       timeout=180, env={**os.environ, 'STEANET_HOME': str(tmp_path)})
    assert r.returncode == 1 and 'boom in on_epoch_end' in r.stderr and 'atexit' not in r.stderr, r.stderr[-3000:]
    assert time.time() - t0 < 120


def test_frames_that_do_not_fit_the_backbone_one_line_before_any_run(synth_root, tmp_path):
    "`data.input_size` that does not fill the backbone's patch grid: one line naming both keys; no folder, no MLflow run."
    rc, out, err = call(['train', '--config', 'demo', '--set', *tiny(synth_root, **{'data.input_size': 224,
                         'data.short_side': 256, 'tracking.enabled': 'true'}), '--run-dir', str(tmp_path / 'run')], env={'STEANET_HOME': str(tmp_path)})
    one_line_error(rc, err, 'data.input_size=224', 'backbone.image_size=224', 'data.input_size=32')
    assert not (tmp_path / 'run').exists() and not (tmp_path / 'mlruns').exists()
