"""The prepared store end to end: with `data.store` set, training, evaluation, a study and the demo's wiring never open
a source video (the sources are moved away after `prepare-data`, and a bad item raises instead of being substituted)."""
import shutil
from pathlib import Path

import pytest
import torch

from steanet.config import make_config


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    "Tiny synthetic videos, their store, then the videos moved away: (root, store, moved-to folder)."
    from steanet.synthetic import make_synthetic_dataset
    from steanet.data import prepare_data
    d = tmp_path_factory.mktemp('store')
    root = make_synthetic_dataset(d / 'synth', n_per_class=2, val_per_class=1, test_per_class=1, frames=8, seed=3)
    s = prepare_data(make_config('demo', [f'data.root={root}']), d / 'store', workers=0, progress=False, say=lambda m: None)
    assert s['bad'] == 0 and s['ok'] == s['videos'] == 32 and s['format'] == 'raw'
    shutil.move(str(root / 'videos'), str(d / 'moved'))         # the annotations stay; not one video is left
    assert not list(root.rglob('*.mp4'))
    yield root, d / 'store', d / 'moved'
    shutil.move(str(d / 'moved'), str(root / 'videos'))


def _overrides(root, store, **kw):
    ov = {'data.root': str(root), 'data.store': str(store), 'data.bad_items': 'raise', 'backbone.pretrained': 'none',
          'backbone.allow_random_backbone': 'true', 'data.num_frames': 4, 'train.batch_size': 4, 'train.epochs': 1,
          'tracking.enabled': 'false', 'data.num_workers': 1}
    ov.update(kw)
    return [f'{k}={v}' for k, v in ov.items()]


def test_train_and_eval_read_only_the_store(prepared, tmp_path):
    from steanet.train import eval_checkpoint, fit
    root, store, _ = prepared
    torch.set_num_threads(1)
    res = fit(make_config('demo', _overrides(root, store)), run_dir=tmp_path / 'run', progress=False)
    # data.bad_items=raise: a source the loader tried to open (they are gone) would have raised DecodeError
    assert 0 <= res['metrics']['test/top1'] <= 1
    m = eval_checkpoint(res['best_checkpoint'], views=2)            # multi-view test, from the checkpoint's config
    assert m['views'] == 2 and 0 <= m['top1'] <= 1


def test_a_study_reads_only_the_store(prepared, tmp_path):
    pytest.importorskip('optuna')
    from steanet.tune import run_study
    root, store, _ = prepared
    cfg = make_config('demo', _overrides(root, store, **{'tune.n_trials': 1, 'tune.epochs': 1, 'tune.study': 'st',
                                                         'tune.storage': f'sqlite:///{tmp_path}/optuna.db'}))
    s = run_study(cfg, progress=False)
    assert s['states']['COMPLETE'] + s['states']['PRUNED'] == 1


def test_a_store_without_the_video_or_too_small_is_a_clear_error(prepared):
    from steanet.data import DataError, build_dataset
    root, store, _ = prepared
    cfg = make_config('demo', _overrides(root, store))
    with pytest.raises(DataError, match='--short-side'):
        build_dataset(make_config('demo', _overrides(root, store, **{'data.short_side': 512})), 'train', mean=(0,) * 3, std=(1,) * 3)
    ds = build_dataset(cfg, 'train', mean=(0,) * 3, std=(1,) * 3)
    from steanet.data import VideoRecord
    ds.records[0] = VideoRecord(str(root / 'videos' / 'new.mp4'), 0, 'joy')     # added after prepare-data ran
    with pytest.raises(DataError, match='not in the prepared store'):
        ds[0]


def test_the_demo_prepares_once_and_trains_every_variant_from_the_store(prepared, monkeypatch, tmp_path):
    "run_demo prepares its videos once (demo_store; a second demo prepares nothing) and every variant reads the store."
    import steanet.demo as demo
    from steanet.synthetic import make_synthetic_dataset
    root = make_synthetic_dataset(tmp_path / 'videos', n_per_class=1, val_per_class=1, test_per_class=1, frames=4, seed=1)
    seen, summaries, real_prepare = [], [], demo.prepare_data
    monkeypatch.setattr(demo, 'demo_videos', lambda *a, **k: root)
    monkeypatch.setattr(demo, 'pretrain_tiny_backbone', lambda **k: tmp_path / 'w.safetensors')
    monkeypatch.setattr(demo, 'fit', lambda c, **k: seen.append(c) or dict(metrics={}, tunable_params=0, run_id=None,
                                                                          seconds=0, best_checkpoint=None))
    monkeypatch.setattr(demo, 'shuffled_test', lambda *a, **k: 0.0)
    monkeypatch.setattr(demo, 'prepare_data', lambda *a, **k: summaries.append(real_prepare(*a, **k)) or summaries[-1])
    r = demo.run_demo(['tracking.enabled=false'], progress=False, publish=False)
    import steanet.data.store as store                      # a warm demo opens no source video, not even its header
    monkeypatch.setattr(store, '_open_stream', lambda p: (_ for _ in ()).throw(AssertionError(f'opened {p}')))
    r = demo.run_demo(['tracking.enabled=false'], progress=False, publish=False)
    assert [s['prepared'] for s in summaries] == [24, 0] and summaries[1]['reused'] == 24
    assert {c.data.store for c in seen} == {r['store']} and len(seen) == 2 * len(demo.DEMO_VARIANTS)


def test_persistent_workers_keep_the_seeding(prepared, tmp_path):
    "One training loader per run (workers persist across epochs): 2 workers give the same losses as none, epoch by epoch."
    from steanet.train import fit
    root, store, _ = prepared
    torch.set_num_threads(1)
    h = [fit(make_config('demo', _overrides(root, store, **{'train.epochs': 2, 'data.num_workers': w})),
             run_dir=tmp_path / f'w{w}', progress=False, test=False)['history'] for w in (0, 2)]
    assert [e['train/epoch_loss'] for e in h[0]] == pytest.approx([e['train/epoch_loss'] for e in h[1]], rel=1e-5)


def test_multi_view_test_reads_each_video_once(prepared, monkeypatch):
    "4 temporal x 3 spatial views of a test item: one read of the stored video for all 12."
    from steanet.data import build_dataset, store
    root, st, _ = prepared
    calls = []
    real = store.StoreReader.get
    monkeypatch.setattr(store.StoreReader, 'get', lambda self, idx: calls.append(len(idx)) or real(self, idx))
    ds = build_dataset(make_config('demo', _overrides(root, st, **{'data.num_clips': 4, 'data.test_crops': 3})), 'test',
                       mean=(0,) * 3, std=(1,) * 3)
    item = ds[0]
    assert item['video'].shape[0] == 12 and calls == [4 * 4]


def test_prepare_data_killed_then_rerun_finishes(tmp_path):
    "SIGKILL `steanet prepare-data` mid-way: the rerun keeps the finished videos, prepares the rest, leaves no temp folder."
    import os, signal, subprocess, sys, time
    from steanet.synthetic import make_synthetic_dataset
    root = make_synthetic_dataset(tmp_path / 'v', n_per_class=2, val_per_class=1, test_per_class=1, frames=8, seed=5)
    args = ['prepare-data', '--config', 'demo', '--set', f'data.root={root}', '--out', str(tmp_path / 's'), '--workers', '0',
            '--json', '--quiet']
    code = 'import sys, time; import steanet.data.store as s; f = s.prepare_one\n' \
           'def slow(j): time.sleep(0.3); return f(j)\n' \
           's.prepare_one = slow\nfrom steanet.cli import main; sys.exit(main(sys.argv[1:]))'
    p = subprocess.Popen([sys.executable, '-c', code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    vids = tmp_path / 's' / 'videos'
    for _ in range(600):
        if vids.is_dir() and len([d for d in vids.iterdir() if not d.name.startswith('.')]) >= 3: break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    done = len([d for d in vids.iterdir() if not d.name.startswith('.')])
    assert 3 <= done < 32, done
    from steanet.data import prepare_data
    s = prepare_data(make_config('demo', [f'data.root={root}']), tmp_path / 's', workers=0, progress=False, say=lambda m: None)
    assert (s['ok'], s['reused'], s['prepared']) == (32, done, 32 - done) and not list(vids.glob('.*'))
