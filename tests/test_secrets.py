"""Issue 26, secrets: a train and a tune run whose MLflow store, Optuna storage and config hold passwords (in the query
of the URL, and a token-only userinfo) leave them in no file, no file name, no database row and no output line; and
MLflow's own 'View run ... at: <url>' line never shows a password."""
import contextlib, io, json, sqlite3, sys
from pathlib import Path

import pytest

from steanet.cli import main

TRACK, STORE, TOKEN = 'TrackPw0rdS3CRET', 'OptunaPw0rdS3CRET', 'Tok3nS3CRETxyz'
SECRETS = (TRACK, STORE, TOKEN)


def _run(argv) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([*argv, '--json'])
    return rc, out.getvalue(), err.getvalue()


def _leaks(root: Path) -> list:
    "Every file (by name or content) and every row of every sqlite database under `root` that holds a secret."
    found = []
    for p in root.rglob('*'):
        if any(s in p.name for s in SECRETS): found.append(f'name: {p}')
        if not p.is_file(): continue
        data = p.read_bytes()
        if any(s.encode() in data for s in SECRETS): found.append(f'content: {p}')
        if data[:16] == b'SQLite format 3\x00':
            with contextlib.closing(sqlite3.connect(p)) as db:
                dump = '\n'.join(db.iterdump())
            if any(s in dump for s in SECRETS): found.append(f'database dump: {p}')
    return found


def test_no_secret_anywhere_after_train_and_tune(synth_root, tmp_path, monkeypatch):
    monkeypatch.setenv('MLFLOW_TRACKING_URI', f'sqlite:///{tmp_path}/mlruns/mlflow.db?password={TRACK}')
    storage = f'sqlite:///{tmp_path}/mlruns/optuna.db?password={STORE}'
    sets = [f'data.root={synth_root}', 'data.num_frames=4', 'train.batch_size=8', 'tracking.log_checkpoint=false',
            f'tracking.uri=https://{TOKEN}@mlflow.example.org', f'tune.storage={storage}']   # given, shadowed by the env
    rc, out, err = _run(['train', '--config', 'demo', '--set', *sets, 'train.max_steps=2', 'train.epochs=1'])
    assert rc == 0, err[-3000:]
    assert not [s for s in SECRETS if s in out + err], (out + err)[-3000:]
    run_dir = Path(json.loads(out.strip().splitlines()[-1])['run_dir'])
    assert 'https://***@mlflow.example.org' in (run_dir / 'config.yaml').read_text()   # masked, not dropped
    rc, out, err = _run(['tune', '--config', 'demo', '--set', *sets, 'tune.epochs=1', 'tune.study=secret',
                         '--storage', storage, '--n-trials', '1'])
    assert rc == 0, err[-3000:]
    assert not [s for s in SECRETS if s in out + err], (out + err)[-3000:]
    assert (tmp_path / 'mlruns' / 'optuna.db').is_file() and (tmp_path / 'mlruns' / 'mlflow.db').is_file()
    assert not _leaks(tmp_path), _leaks(tmp_path)


def test_mlflow_run_url_line_shows_no_password(monkeypatch):
    "MLflow prints '🏃 View run <name> at: <server URL>' when an HTTP run ends: silenced, and masked if let through."
    import steanet.tracking  # noqa: F401  (sets MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT)
    from types import SimpleNamespace
    from mlflow.tracking._tracking_service.client import TrackingServiceClient
    from steanet.config import redacted_output
    url = f'http://u:{TRACK}@127.0.0.1:9'
    c = TrackingServiceClient(url)
    run = SimpleNamespace(info=SimpleNamespace(experiment_id='1', run_name='r'), data=SimpleNamespace(tags={}))
    monkeypatch.setattr(type(c.store), 'get_run', lambda self, rid: run)
    for suppress, expect_line in (('true', False), ('false', True)):
        monkeypatch.setenv('MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT', suppress)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), redacted_output(): c._log_url('abc')
        assert TRACK not in buf.getvalue() and ('View run r at: http://u:***@127.0.0.1:9' in buf.getvalue()) == expect_line


def test_sqlite_lock_is_named_after_the_file_not_the_url(tmp_path):
    from steanet.tracking import sqlite_init_lock
    with sqlite_init_lock(f'sqlite:///{tmp_path}/o.db?password={STORE}&x=a/b'): pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ['o.db.init.lock']


@pytest.mark.parametrize('url', ['postgresql+psycopg://u:pa#ss/W0rdS3CRET@db:5432/optuna',
                                 'https://Tok3nS3CRETxyz@mlflow.example.org/', 'sqlite:////tmp/o.db?password=W0rdS3CRET'])
def test_config_show_masks_every_password(url):
    "`config show` (text and --json) on passwords with `#` or `/`, a token-only userinfo, a query password."
    for json_flag in ([], ['--json']):
        rc, out, err = _run_plain(['config', 'show', '--config', 'demo', '--set', f'tune.storage={url}', f'tracking.uri={url}', *json_flag])
        assert rc == 0 and 'S3CRET' not in out + err and '***' in out, out + err


def _run_plain(argv) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(argv)
    return rc, out.getvalue(), err.getvalue()
