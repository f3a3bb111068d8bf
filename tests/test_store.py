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


# --- the store is the dataset (issue 25), keeps the protocol (issue 20), is safe to share (issue 26) -------------------

def _fit_metrics(cfg, run_dir):
    from steanet.train import fit
    torch.set_num_threads(1)
    res = fit(cfg, run_dir=run_dir, progress=False)
    return {k: v for k, v in res['metrics'].items() if k.startswith('test/') and isinstance(v, float)}


def test_a_moved_store_trains_without_its_sources(tmp_path):
    "cp -r the store elsewhere, delete every source and list file: data.format=store gives the metrics of the original."
    from steanet.synthetic import make_synthetic_dataset
    from steanet.data import check_store, load_records, prepare_data
    root = make_synthetic_dataset(tmp_path / 'synth', n_per_class=2, val_per_class=1, test_per_class=1, frames=8, seed=7)
    prepare_data(make_config('demo', [f'data.root={root}']), tmp_path / 'store', workers=0, progress=False, say=lambda m: None)
    ov = _overrides(root, tmp_path / 'store', **{'data.num_workers': 0})
    before = _fit_metrics(make_config('demo', ov), tmp_path / 'r1')
    recs_before = {s: load_records(make_config('demo', ov), s)[0] for s in ('train', 'val', 'test')}
    shutil.copytree(tmp_path / 'store', tmp_path / 'moved' / 'store'); shutil.rmtree(tmp_path / 'store')
    shutil.rmtree(root)                                               # the videos, classInd.txt and the lists
    for fmt in ('store', 'synthetic'):                                # data.format=store, or the old format + data.store
        ov2 = _overrides(root, tmp_path / 'moved' / 'store', **{'data.num_workers': 0, 'data.format': fmt})
        cfg = make_config('demo', ov2)
        for s, rs in recs_before.items():
            assert [(r.path, r.label, r.class_name) for r in load_records(cfg, s)[0]] == \
                   [(r.path, r.label, r.class_name) for r in rs], s
    after = _fit_metrics(make_config('demo', _overrides(root, tmp_path / 'moved' / 'store',
                                                        **{'data.num_workers': 0, 'data.format': 'store'})), tmp_path / 'r2')
    assert after == pytest.approx(before, abs=1e-6) and after, (before, after)
    s = check_store(tmp_path / 'moved' / 'store')
    assert (s['ok'], s['bad'], s['manifest_problems']) == (32, 0, []) and s['splits']['1'] == {'train': 16, 'val': 8, 'test': 8}
    assert sum(s['classes'].values()) == 32 and len(s['classes']) == 8


def test_check_data_store_names_a_damaged_video_and_training_skips_it(tmp_path):
    "A truncated frames file: check-data --store names it (exit 1); the dataset counts it as a bad item, never crashes."
    import json, subprocess, sys
    from steanet.synthetic import make_synthetic_dataset
    from steanet.data import build_dataset, prepare_data
    root = make_synthetic_dataset(tmp_path / 'synth', n_per_class=1, val_per_class=1, test_per_class=1, frames=8, seed=2)
    prepare_data(make_config('demo', [f'data.root={root}']), tmp_path / 'st', workers=0, progress=False, say=lambda m: None)
    man = json.loads((tmp_path / 'st' / 'store.json').read_text())
    key = man['dataset']['lists']['1']['train'][0]; v = man['videos'][key]
    f = tmp_path / 'st' / 'videos' / v['sha256'] / 'frames.u8'
    f.write_bytes(f.read_bytes()[:-1000])
    p = subprocess.run([sys.executable, '-m', 'steanet.cli', 'check-data', '--store', str(tmp_path / 'st'), '--json'],
                       capture_output=True, text=True)
    if p.returncode not in (0, 1):                                    # `python -m steanet.cli` may not be runnable
        p = subprocess.run(['steanet', 'check-data', '--store', str(tmp_path / 'st'), '--json'], capture_output=True, text=True)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 1 and out['bad'] == 1 and out['damaged_files'][0]['path'].endswith(key.split('/')[-1]), p.stdout
    cfg = make_config('demo', _overrides(root, tmp_path / 'st', **{'data.bad_items': 'skip'}))
    ds = build_dataset(cfg, 'train', mean=(0,) * 3, std=(1,) * 3)
    i = next(i for i, r in enumerate(ds.records) if r.path.endswith(key.split('/')[-1]))
    item = ds[i]
    assert item['n_bad'] == 1 and item['index'] != i and 'frames.u8' in next(iter(ds.bad.values()))


def test_partial_sources_follow_partial_videos(tmp_path):
    "A cut AVI is flagged partial: `skip` makes it a bad item, `use` reads it (counted), as when decoding on the fly."
    from steanet.data import DecodeError, VideoRecord, build_dataset, prepare_data, write_video
    import numpy as np
    rng = np.random.default_rng(0)
    full = write_video(tmp_path / 'src' / 'full.avi', rng.integers(0, 255, (60, 32, 32, 3), dtype=np.uint8), fps=25)
    cut = tmp_path / 'src' / 'cut.avi'; cut.write_bytes(full.read_bytes()[:int(full.stat().st_size * 0.5)])
    recs = [VideoRecord(str(full), 0, 'a'), VideoRecord(str(cut), 1, 'b')]
    s = prepare_data(records=recs, out=tmp_path / 'st', short_side=32, workers=0, progress=False, say=lambda m: None)
    assert s['partial'] == 1 and s['partial_files'][0]['path'] == str(cut)
    base = ['data.num_frames=4', 'data.input_size=32', 'data.short_side=32', f'data.store={tmp_path / "st"}', 'data.root=']
    for mode in ('skip', 'use'):
        cfg = make_config('demo', base + [f'data.partial_videos={mode}', 'data.bad_items=raise'])
        ds = build_dataset(cfg, 'test', records=recs, class_names=['a', 'b'], mean=(0,) * 3, std=(1,) * 3)
        ds[0]
        if mode == 'skip':
            with pytest.raises(DecodeError, match='partial_videos=skip'): ds[1]
        else: assert ds[1]['n_partial'] == 1


def test_dense_sampling_on_a_reduced_fps_store_or_refused(tmp_path):
    "--fps 10 of 25 fps sources: dense clips keep their source spacing; a dense interval finer than the store is refused."
    from steanet.data import DataError, VideoRecord, build_dataset, prepare_data, write_video
    import numpy as np
    rng = np.random.default_rng(1)
    v = write_video(tmp_path / 'src' / 'v.mp4', rng.integers(0, 255, (100, 32, 32, 3), dtype=np.uint8), fps=25)
    prepare_data(records=[VideoRecord(str(v), 0, 'a')], out=tmp_path / 'st', short_side=32, fps=10, workers=0,
                 progress=False, say=lambda m: None)
    base = ['data.num_frames=4', 'data.input_size=32', 'data.short_side=32', f'data.store={tmp_path / "st"}', 'data.root=',
            'data.sampling=dense']
    ds = build_dataset(make_config('demo', base + ['data.frame_interval=8']), 'test', records=[VideoRecord(str(v), 0, 'a')],
                       class_names=['a'], mean=(0,) * 3, std=(1,) * 3)
    from steanet.data import source_frames
    _, views = ds.load(0)
    assert np.abs(np.diff(source_frames(ds.dc, v, views[0])) - 8).max() <= 2     # 8 source frames apart (2.5 per stored)
    with pytest.raises(DataError, match='--fps'):
        build_dataset(make_config('demo', base + ['data.frame_interval=2']), 'test', records=[VideoRecord(str(v), 0, 'a')],
                      class_names=['a'], mean=(0,) * 3, std=(1,) * 3)


_SLOW = ('import sys, time, json; import steanet.data.store as s; f = s.prepare_one\n'
         'def slow(j): time.sleep(0.2); return f(j)\n'
         's.prepare_one = slow\n'
         'from steanet.data import prepare_data, VideoRecord\n'
         'recs = [VideoRecord(p, 0, "x") for p in sys.argv[2:]]\n'
         'r = prepare_data(records=recs, out=sys.argv[1], short_side=32, workers=0, progress=False, say=lambda m: None)\n'
         'print(json.dumps(dict(ok=r["ok"], bad=r["bad"])))')


def test_concurrent_prepare_data_indexes_both_runs(tmp_path):
    "Two prepare-data runs into one store at once, each with its own videos: both succeed, both sets are indexed."
    import json, subprocess, sys
    import numpy as np
    from steanet.data import write_video, open_store
    rng = np.random.default_rng(3)
    vids = [str(write_video(tmp_path / 'src' / f'{i}.mp4', rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8), fps=25))
            for i in range(12)]
    ps = [subprocess.Popen([sys.executable, '-c', _SLOW, str(tmp_path / 'st'), *half], stdout=subprocess.PIPE, text=True)
          for half in (vids[:6], vids[6:])]
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in ps]
    assert outs == [dict(ok=6, bad=0)] * 2 and all(p.returncode == 0 for p in ps)
    assert len(open_store(tmp_path / 'st').videos) == 12


_HANG = ('import os, time\n'
         'def _patch():\n'
         '    import av, multiprocessing\n'
         '    real = av.open\n'
         '    def opened(p, *a, **k):\n'
         '        if multiprocessing.parent_process() is not None and "hang" in str(p): time.sleep(3600)\n'
         '        return real(p, *a, **k)\n'
         '    av.open = opened\n'
         'if os.environ.get("STEANET_TEST_HANG"): _patch()\n')


def test_a_hung_decode_is_killed_and_listed_bad(tmp_path):
    "A decoder that never returns (simulated in the worker processes only): killed after --timeout, listed, the rest goes on."
    import json, os, subprocess, sys
    import numpy as np
    from steanet.data import write_video
    rng = np.random.default_rng(4)
    vids = [str(write_video(tmp_path / 'src' / f'{n}.mp4', rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8), fps=25))
            for n in ('a', 'hang', 'b')]
    (tmp_path / 'site').mkdir(); (tmp_path / 'site' / 'sitecustomize.py').write_text(_HANG)
    env = dict(os.environ, STEANET_TEST_HANG='1', PYTHONPATH=f'{tmp_path / "site"}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    code = ('import sys, json; from steanet.data import prepare_data, VideoRecord\n'
            'r = prepare_data(records=[VideoRecord(p, 0, "x") for p in sys.argv[2:]], out=sys.argv[1], short_side=32, '
            'workers=1, timeout=3, progress=False, say=lambda m: None)\n'
            'print(json.dumps(dict(ok=r["ok"], bad=r["bad_files"])))')
    p = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'st'), *vids], capture_output=True, text=True, env=env,
                       timeout=300)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out['ok'] == 2 and len(out['bad']) == 1 and out['bad'][0]['path'].endswith('hang.mp4'), (out, p.stderr[-2000:])
    assert '--timeout' in out['bad'][0]['reason']


def test_a_file_size_limit_stops_preparation_in_one_line(tmp_path):
    "RLIMIT_FSIZE below a video's frames: one line naming the limit and the space needed, not 'every video is bad'."
    import resource, subprocess, sys
    import numpy as np
    from steanet.data import write_video
    rng = np.random.default_rng(5)
    vids = [str(write_video(tmp_path / 'src' / f'{i}.mp4', rng.integers(0, 255, (40, 64, 64, 3), dtype=np.uint8), fps=25))
            for i in range(3)]
    code = ('import sys; from steanet.data import prepare_data, VideoRecord, DataError\n'
            'try: prepare_data(records=[VideoRecord(p, 0, "x") for p in sys.argv[2:]], out=sys.argv[1], short_side=64, '
            'workers=0, progress=False, say=lambda m: None)\n'
            'except DataError as e: print("ERR", e); sys.exit(1)\n')
    lim = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    p = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'st'), *vids], capture_output=True, text=True,
                       preexec_fn=lim, timeout=300)
    assert p.returncode == 1 and 'file too large' in p.stdout and 'more are needed' in p.stdout, (p.stdout, p.stderr[-1500:])
    assert len(p.stdout.strip().splitlines()) == 1


def test_a_damaged_manifest_is_one_line_with_the_rebuild(prepared, tmp_path):
    "train with a cut store.json: one line naming --rebuild-index (no JSONDecodeError traceback)."
    from steanet.data import DataError, load_records
    root, store, _ = prepared
    bad = tmp_path / 'st'; shutil.copytree(store, bad)
    (bad / 'store.json').write_text((bad / 'store.json').read_text()[:200])
    with pytest.raises(DataError, match='--rebuild-index'):
        load_records(make_config('demo', _overrides(root, bad)), 'train')


def test_a_run_logs_the_stores_rates(prepared, tmp_path):
    "Every run that reads a store logs how it was prepared: store.fps, store.stored_fps, store.source_fps, ..."
    import mlflow
    from steanet.train import fit
    root, store, _ = prepared
    torch.set_num_threads(1)
    cfg = make_config('demo', _overrides(root, store, **{'tracking.enabled': 'true', 'tracking.log_model': 'false',
                                                         'tracking.system_metrics': 'false', 'data.num_workers': 0}))
    res = fit(cfg, run_dir=tmp_path / 'run', progress=False, test=False)
    from steanet.tracking import tracking_uri
    p = mlflow.MlflowClient(tracking_uri(cfg)).get_run(res['run_id']).data.params
    assert (p['store.fps'], p['store.format'], p['store.version']) == ('every source frame', 'raw', '2'), p
    assert p['store.source_fps'] == p['store.stored_fps'] and float(p['store.source_fps']) > 0
