"""Shared test set-up: offline hubs, no telemetry, headless matplotlib, and the `../shared/fixtures` locator."""
import os
from pathlib import Path

import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')
os.environ.setdefault('MPLBACKEND', 'Agg')
# one of `pytest -n N`'s workers (pytest-xdist; `make test` runs two on two cores): one compute thread per worker and
# per process it starts, so the workers share the cores instead of oversubscribing them (set before torch loads)
XDIST_WORKER = os.environ.get('PYTEST_XDIST_WORKER')
if XDIST_WORKER:
    for _k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'): os.environ[_k] = '1'

ROOT = Path(__file__).resolve().parents[1]
# `$STEANET_FIXTURES` (e.g. a git worktree elsewhere), else `../shared/fixtures` beside the project
FIXTURES = Path(os.environ.get('STEANET_FIXTURES', ROOT.parent / 'shared' / 'fixtures'))


@pytest.fixture(scope='session')
def fixtures_dir() -> Path:
    "`../shared/fixtures` beside the project; the test is skipped where it is absent (a user's clone)."
    if not FIXTURES.is_dir():
        pytest.skip(f'{FIXTURES} not present (only CI and developer checkouts have ../shared)')
    return FIXTURES


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    "Every test writes caches and MLflow stores under its own temp dir, never into the project."
    monkeypatch.setenv('STEANET_HOME', str(tmp_path))
    monkeypatch.setenv('STEANET_CACHE', str(tmp_path / '.user-cache'))   # the private per-user cache (models), too
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)
    yield


@pytest.fixture(scope='session')
def synth_root(tmp_path_factory):
    "8 classes x (2 train + 1 val + 1 test) synthetic videos of 8 frames, made once per session for every test file."
    from steanet.synthetic import make_synthetic_dataset
    return make_synthetic_dataset(tmp_path_factory.mktemp('synth') / 'videos', n_per_class=2, val_per_class=1,
                                  test_per_class=1, frames=8, seed=3)


# The test files that take longest (CPU seconds per file, measured 2026-12-07 on the 2-core machine), slowest first.
# Under pytest-xdist (`make test`: `-n 2 --dist loadfile`, a file's tests on one worker) they are handed out first, so
# the workers end together instead of one finishing a long file alone; every other file follows in its usual order.
SLOW_FIRST = ['test_explain.py', 'test_tune.py', 'test_train.py', 'test_mlflow.py', 'test_signals.py', 'test_model.py',
              'test_foundation.py', 'test_data.py', 'test_reliability.py', 'test_report.py', 'test_config.py',
              'test_store.py', 'test_protocol.py', 'test_first_hour.py']


def pytest_collection_modifyitems(config, items):
    if not XDIST_WORKER: return
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))    # stable: within a file the order is kept


def _utf8_text(s):
    "`s` with lone surrogates (file names that are not UTF-8, as the OS gives them) written as `\\udcXX` escapes."
    return s.encode('utf-8', 'backslashreplace').decode('utf-8') if isinstance(s, str) else s


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test's report goes from an xdist worker to the controller as UTF-8: the captured output of the tests of names
    that are not UTF-8 holds lone surrogates, which would crash the worker (execnet's UnicodeEncodeError) and lose the
    rest of its tests. Escape them in the captured sections and in a failure's text."""
    outcome = yield
    rep = outcome.get_result()
    rep.sections = [(_utf8_text(k), _utf8_text(v)) for k, v in rep.sections]
    if rep.longrepr is not None and not isinstance(rep.longrepr, tuple):
        text = str(rep.longrepr)
        if _utf8_text(text) != text: rep.longrepr = _utf8_text(text)
