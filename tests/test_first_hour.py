"""The README's "Your own videos" section, end to end: a class-folder dataset of real fixture videos and synthetic ones,
from checking it to an MLflow comparison of two runs (a smoke run on a local backbone weights file, and a baseline),
then eval, predict, explain and a one-trial study; every command through `steanet.cli.main`."""
import contextlib, io, json, os, shutil
from pathlib import Path

import pytest

from steanet.cli import main


def run_cli(argv) -> tuple:
    "`(exit code, last JSON line, stderr)` of `steanet <argv> --json`."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([*argv, '--json'])
    lines = out.getvalue().strip().splitlines()
    return rc, (json.loads(lines[-1]) if lines else None), err.getvalue()


@pytest.fixture(scope='module')
def own_videos(tmp_path_factory, fixtures_dir):
    """`videos/{train,val,test}/{joy,fear}/*`: the three real fixture videos (H.264 MP4s, an MPEG-4 AVI) in train,
    synthetic warm-expanding (joy) and cool-contracting (fear) clips in every split."""
    from steanet.synthetic import make_synthetic_dataset
    base = tmp_path_factory.mktemp('own')
    syn = make_synthetic_dataset(base / 'synth', n_per_class=2, val_per_class=1, test_per_class=1, frames=8, seed=5)
    root = base / 'videos'
    for split, n in (('train', 2), ('val', 1), ('test', 1)):
        for cls, src in (('joy', 'joy'), ('fear', 'fear')):
            d = root / split / cls; d.mkdir(parents=True)
            for i in range(n): shutil.copy(syn / 'videos' / src / f'{split}_{i:04d}.mp4', d / f'synth_{i}.mp4')
    real = fixtures_dir / 'videos'
    shutil.copy(real / 'demo_340x256_h264.mp4', root / 'train' / 'joy')
    shutil.copy(real / 'short_32frames.mp4', root / 'train' / 'joy')
    shutil.copy(real / 'test_320x240_mpeg4.avi', root / 'train' / 'fear')
    return root


@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory):
    "A local backbone weights file (what `steanet demo` leaves at .cache/steanet/backbones/steanet-tiny-demo.safetensors)."
    import open_clip, torch
    from steanet.model import register_tiny_configs, save_backbone_weights
    register_tiny_configs(); torch.manual_seed(0)
    return save_backbone_weights(open_clip.create_model('steanet-tiny', pretrained=None).visual,
                                 tmp_path_factory.mktemp('weights') / 'tiny.safetensors')


def test_your_own_videos_end_to_end(own_videos, tiny_weights, tmp_path, monkeypatch):
    import mlflow
    from steanet.model import file_sha256
    work = tmp_path / 'somewhere'; work.mkdir(); monkeypatch.chdir(work)     # the stores follow STEANET_HOME, not the cwd
    rc, s, _ = run_cli(['check-data', '--config', 'folder', '--set', f'data.root={own_videos}'])
    assert rc == 0 and s['ok'] == s['total'] == 11 and s['classes'] == ['fear', 'joy'], s
    small = [f'data.root={own_videos}', 'backbone.name=steanet-tiny', f'backbone.pretrained={tiny_weights}',
             'data.num_frames=4', 'data.input_size=32', 'data.short_side=32', 'data.num_workers=0', 'train.batch_size=2']
    rc, cfg, _ = run_cli(['config', 'show', '--config', 'folder', '--set', *small])
    assert rc == 0 and cfg['config']['data']['format'] == 'folder' and cfg['config']['data']['num_classes'] is None

    rc, smoke, err = run_cli(['train', '--config', 'folder', '--set', *small, 'train.max_steps=2'])
    assert rc == 0, err
    assert smoke['class_names'] == ['fear', 'joy'] and smoke['smoke'] == 'max_steps=2 limit_batches=None'
    m = smoke['metrics']
    assert m['best_val_top1'] is not None and m['test/top1'] is not None     # a validation (val/) and a test (test/)
    rc, base, err = run_cli(['train', '--config', 'folder', '--set', *small, 'adapters.variant=linear_probe',
                             'train.epochs=1', 'tracking.run_name=probe'])
    assert rc == 0, err

    client = mlflow.MlflowClient(f'sqlite:///{tmp_path}/mlruns/mlflow.db')    # the project's store: $STEANET_HOME/mlruns
    exp = client.get_experiment_by_name('folder')
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {smoke['run_id'], base['run_id']} and all(r.info.status == 'FINISHED' for r in runs.values())
    tags = runs[smoke['run_id']].data.tags
    assert tags['steanet.smoke'] == 'true' and 'steanet.smoke' not in runs[base['run_id']].data.tags
    assert tags['backbone_sha256'] == file_sha256(tiny_weights) and tags['backbone_pretrained'] == str(tiny_weights)
    assert 'test/top1' in runs[base['run_id']].data.metrics and base['metrics']['test/top1'] is not None

    rc, ev, err = run_cli(['eval', '--checkpoint', smoke['run_dir']])
    assert rc == 0 and ev['n'] == 2, err
    rc, pr, err = run_cli(['predict', '--checkpoint', smoke['run_dir'], str(own_videos / 'train' / 'joy' / 'short_32frames.mp4')])
    assert rc == 0 and pr['predictions'][0]['error'] is None, err
    clip = own_videos / 'test' / 'joy' / 'synth_0.mp4'
    rc, ex, err = run_cli(['explain', '--checkpoint', smoke['run_dir'], str(clip), '--out', str(tmp_path / 'explain')])
    assert rc == 0, err
    assert set(ex['methods']) == {'relevance', 'ig', 'saliency', 'temporal'} and ex['methods']['ig']['deletion_auc'] is None
    summary = json.loads((tmp_path / 'explain' / 'summary.json').read_text())
    assert summary['clips'][0]['label'] == 1 and 'true joy' in err            # the class folder is the true label
    assert (tmp_path / 'explain' / 'synth_0.png').exists() and (tmp_path / 'explain' / 'synth_0.ig.gif').exists()

    rc, st, err = run_cli(['tune', '--config', 'folder', '--set', *small, 'tune.n_trials=1', 'tune.epochs=1',
                           'train.limit_batches=1', '--no-plots'])
    assert rc == 0, err
    assert st['best']['number'] == 0 and 'best trial 0:' in err and 'value (accuracy)' in err
    assert (tmp_path / 'mlruns' / 'optuna.db').exists() and not (work / 'mlruns').exists()
