"""Shared test set-up: offline hubs, no telemetry, headless matplotlib, and the `../shared/fixtures` locator."""
import os
from pathlib import Path

import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')
os.environ.setdefault('MPLBACKEND', 'Agg')

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
