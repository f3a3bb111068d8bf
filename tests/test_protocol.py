"""Honest numbers (issue 11): selection never reads the test split, the test split is scored once, gradient
accumulation weights every group as the mean of its own micro-batches, metrics by their reference definitions.
Tiny config on a random steanet-tiny backbone, a few synthetic videos arranged as class folders."""
import json, os
from pathlib import Path

import numpy as np
import pytest
import torch

from steanet.config import make_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    "8 classes x (2 train + 1 val + 1 test) synthetic videos of 8 frames."
    from steanet.synthetic import make_synthetic_dataset
    return make_synthetic_dataset(tmp_path_factory.mktemp('proto') / 'synth', n_per_class=2, val_per_class=1,
                                  test_per_class=1, frames=8, seed=5)


def folder_dataset(synth: Path, dest: Path, splits=('train', 'val', 'test'), test_perm=None) -> Path:
    "`dest/<split>/<Class>/*.mp4` (symlinks to the synthetic videos); `test_perm` moves test videos to other classes."
    from steanet.config import DataConfig
    from steanet.data import load_records
    dc = DataConfig(format='synthetic', root=str(synth), annotations='', num_classes=None)
    for s in splits:
        recs, classes = load_records(dc, s)
        for r in recs:
            c = classes[test_perm[r.label]] if (s == 'test' and test_perm is not None) else r.class_name
            (dest / s / c).mkdir(parents=True, exist_ok=True)
            (dest / s / c / Path(r.path).name).symlink_to(r.path)
    return dest


def folder_overrides(root, **kw):
    ov = {'data.root': str(root), 'backbone.name': 'steanet-tiny', 'backbone.pretrained': 'none',
          'backbone.allow_random_backbone': 'true', 'backbone.image_size': 'none', 'data.num_frames': 4,
          'data.input_size': 32, 'data.short_side': 32, 'data.num_workers': 0, 'data.decoder': 'pyav',
          'train.batch_size': 4, 'train.epochs': 3, 'train.lr': 5e-3, 'train.warmup_epochs': 0.5, 'train.device': 'cpu',
          'train.amp': 'off', 'tracking.enabled': 'true', 'tracking.experiment': 'protocol'}
    ov.update(kw)
    return [f'{k}={v}' for k, v in ov.items()]


def tensors(p) -> dict:
    from safetensors.torch import load_file
    return load_file(str(p))


def metric_history(run_id, key):
    from steanet import tracking
    client, _, _ = tracking.setup_mlflow(make_config('demo'))
    return client.get_metric_history(run_id, key)


def test_permuted_test_labels_select_the_same_checkpoint(synth, tmp_path):
    "Two runs whose test splits differ only in permuted labels: same selected epoch, bit-identical tunable tensors."
    from steanet.train import fit
    torch.set_num_threads(1)
    perm = np.roll(np.arange(8), 3)
    out = []
    for name, p in (('plain', None), ('permuted', perm)):
        root = folder_dataset(synth, tmp_path / name, test_perm=p)
        out.append(fit(make_config('folder', folder_overrides(root)), run_dir=tmp_path / f'run-{name}', progress=False))
    a, b = out
    assert a['metrics']['selection'] == b['metrics']['selection'] == 'val'
    assert a['metrics']['val_source'] == 'split' and 'folder val' in a['metrics']['val_param']   # root/val/ selects
    assert a['metrics']['best_epoch'] == b['metrics']['best_epoch']
    sa, sb = (tensors(Path(r['run_dir']) / 'best.safetensors') for r in (a, b))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)      # bit-identical
    last = tensors(Path(a['run_dir']) / 'last.safetensors')
    assert [h['val/top1'] for h in a['history']] == [h['val/top1'] for h in b['history']]
    for r in (a, b):                              # the test split is scored once per run, after training
        hist = metric_history(r['run_id'], 'test/top1')
        assert len(hist) == 1 and hist[0].step == 3
        assert not metric_history(r['run_id'], 'monitor/test_top1')
        from steanet import tracking
        client, _, _ = tracking.setup_mlflow(make_config('demo'))
        tags = client.get_run(r['run_id']).data.tags
        assert (tags['selection'], tags['val_source']) == ('val', 'split')
    meta = json.loads((Path(a['run_dir']) / 'best.json').read_text())
    assert meta['selection']['selection'] == 'val' and meta['epoch'] == a['metrics']['best_epoch']


def test_without_validation_the_last_epoch_and_test_only_as_monitor(synth, tmp_path):
    "No val/ and no carve-out: the last epoch is kept; monitor_test logs monitor/test_* each epoch, test/* once."
    from steanet.train import fit
    from steanet.protocol import resolve_splits
    torch.set_num_threads(1)
    root = folder_dataset(synth, tmp_path / 'tt', splits=('train', 'test'))
    cfg = make_config('folder', folder_overrides(root, **{'train.epochs': 2, 'train.monitor_test': 'true'}))
    r = fit(cfg, run_dir=tmp_path / 'run', progress=False)
    m = r['metrics']
    assert (m['selection'], m['val_source'], m['best_epoch']) == ('last', 'none', 2)
    d = Path(r['run_dir'])
    best, last = tensors(d / 'best.safetensors'), tensors(d / 'last.safetensors')
    assert all(torch.equal(best[k], last[k]) for k in best)
    assert all('monitor/test_top1' in h and not any(k.startswith('val/') for k in h) for h in r['history'])
    assert len(metric_history(r['run_id'], 'monitor/test_top1')) == 2 and len(metric_history(r['run_id'], 'test/top1')) == 1
    # a carve-out when data.val_fraction > 0, stratified from train; the test records are untouched
    tr, va, te, _, sel = resolve_splits(make_config(cfg, ['data.val_fraction=0.5'])).as_tuple()
    assert (sel['selection'], sel['val_source'], len(tr), len(va), len(te)) == ('val', 'carve', 8, 8, 8)
    assert not {x.path for x in va} & {x.path for x in te}
    # train.selection=last keeps the last epoch even with a val split
    root2 = folder_dataset(synth, tmp_path / 'tvt')
    assert resolve_splits(make_config('folder', folder_overrides(root2, **{'train.selection': 'last'}))).selection['selection'] == 'last'


def test_accumulated_micro_batches_equal_one_batch(synth, tmp_path):
    "k=3 micro-batches of 2 per step over 8 micro-batches (groups 3, 3, 2) equal steps on the groups' clips as one batch."
    import torch.nn.functional as F
    from steanet import tracking
    from steanet.train import epoch_batches, lr_at, setup_process, setup_run, train_one_epoch
    torch.set_num_threads(1)
    ov = folder_overrides(folder_dataset(synth, tmp_path / 'd'), **{'train.batch_size': 2, 'train.grad_accum': 3,
                          'train.clip_grad': 'none', 'train.dropout': 0.0, 'tracking.enabled': 'false', 'train.epochs': 1})
    cfg = make_config('folder', ov)

    def training(name):
        c = make_config(cfg)
        return setup_run(c, setup_process(c), tracking.open_run(c, enabled=False), (None,) * 4, tmp_path / name)
    a, b = training('a'), training('b')
    assert (a.accum, a.steps_per_epoch) == (3, 3)
    params = lambda t: [p for p in t.model.parameters() if p.requires_grad]
    seen, real_step = [], a.optimizer.step
    def recording_step(*args, **kw):              # the gradient each optimiser step of the real loop applies
        seen.append([p.grad.detach().clone() for p in params(a)]); return real_step(*args, **kw)
    a.optimizer.step = recording_step
    train_one_epoch(a, 0)
    micro = epoch_batches(len(b.train_ds), 2, 0, cfg.train.seed)
    assert len(micro) == 8 and len(seen) == 3
    b.train_ds.epoch = 0; b.model.train()
    for step, group in enumerate([micro[0:3], micro[3:6], micro[6:8]]):
        items = [b.train_ds[i] for mb in group for i in mb]   # the group's clips as ONE batch
        x = torch.stack([it['video'] for it in items]); y = torch.tensor([it['label'] for it in items])
        b.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(b.model(x), y).backward()
        for ga, p in zip(seen[step], params(b)): torch.testing.assert_close(ga, p.grad, rtol=1e-4, atol=1e-7)
        for g in b.optimizer.param_groups: g['lr'] = lr_at(step, b.steps_per_epoch, 1, cfg.train.lr, cfg.train.warmup_epochs)
        b.optimizer.step()


def test_global_batch_sets_the_accumulation():
    from steanet.config import ConfigError
    from steanet.train import accum_steps
    t = make_config('ve8-release').train
    assert accum_steps(t, 1) == 8 and accum_steps(t, 2) == 4 and accum_steps(t, 8) == 1
    with pytest.raises(ConfigError, match='train.global_batch=32'): accum_steps(t, 3)
    assert accum_steps(make_config('ve8', ['train.grad_accum=2']).train, 4) == 2


def test_metrics_match_scikit_learn_and_mmaction2():
    """Random cases with ties and classes that occur only as predictions (or nowhere): top-k is sklearn's
    `top_k_accuracy_score` (a tie goes to the higher class index), mean-class accuracy and macro-F1 are sklearn's macro
    recall and F1 over one class set (labels or predictions), the mean-class accuracy also MMAction2's."""
    sk = pytest.importorskip('sklearn.metrics')
    from steanet.infer import classification_metrics
    rng = np.random.default_rng(0)
    for case in range(60):
        K = int(rng.integers(2, 9)); n = int(rng.integers(1, 25))
        probs = rng.integers(0, 3, (n, K)).astype(np.float32)            # coarse values: many ties
        labels = rng.integers(0, max(1, K - 2), n)                        # the last classes never occur as labels
        m = classification_metrics(torch.tensor(probs), torch.tensor(labels), K)
        ranked = np.argsort(probs, axis=1, kind='mergesort')[:, ::-1]      # sklearn's own ranking in top_k_accuracy_score
        pred = ranked[:, 0]
        assert m['top1'] == pytest.approx(float((pred == labels).mean())), case
        if K > 2: assert m['top1'] == pytest.approx(sk.top_k_accuracy_score(labels, probs, k=1, labels=range(K))), case
        assert m['macro_f1'] == pytest.approx(sk.f1_score(labels, pred, average='macro', zero_division=0)), case
        assert m['mean_class_acc'] == pytest.approx(sk.recall_score(labels, pred, average='macro', zero_division=0)), case
        seen = sorted(set(labels) | set(pred))                           # MMAction2: classes in labels or predictions
        mmaction = np.mean([(pred[labels == c] == c).mean() if (labels == c).any() else 0.0 for c in seen])
        assert m['mean_class_acc'] == pytest.approx(mmaction), case
        if K > 5:
            assert m['top5'] == pytest.approx(sk.top_k_accuracy_score(labels, probs, k=5, labels=range(K))), case
            assert m['top5'] == pytest.approx(float((ranked[:, :5] == labels[:, None]).any(1).mean())), case


# ---- issue 20: one split resolver; a single list never tests on its training videos; overlaps refused up front ----

def all_lines(synth: Path) -> list:
    "`(name, label)` of every synthetic video (its train, val and test lists together), as one unsplit dataset."
    return [tuple(l.rsplit(None, 1)) for s in ('train', 'val', 'test') for l in (synth / f'{s}.txt').read_text().splitlines()]


def mlflow_runs(home: Path) -> list:
    "Every MLflow run in the project's store (none when the store was never created)."
    if not (home / 'mlruns' / 'mlflow.db').exists(): return []
    from steanet import tracking
    client, _, _ = tracking.setup_mlflow(make_config('demo'))
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def single_files(synth: Path, d: Path) -> dict:
    "An MMAction2 list given as one file and a two-column `path,label` CSV, each naming every video of the set."
    d.mkdir(parents=True, exist_ok=True)
    lines = all_lines(synth)
    (d / 'all.txt').write_text(''.join(f'{n} {l}\n' for n, l in lines))
    names = [x.split(' ', 1)[1] for x in (synth / 'classInd.txt').read_text().splitlines()]
    (d / 'all.csv').write_text('path,label\n' + ''.join(f'{n},{names[int(l)]}\n' for n, l in lines))
    return {'mmaction': d / 'all.txt', 'csv': d / 'all.csv'}


def list_overrides(synth, fmt, ann, **kw):
    return folder_overrides(synth, **{'data.format': fmt, 'data.annotations': str(ann), **kw})


@pytest.mark.parametrize('fmt', ['mmaction', 'csv'])
def test_a_single_list_is_refused_before_any_run(synth, tmp_path, fmt):
    "One list (MMAction2 file, two-column CSV) used to be every split (test = train): fit refuses it, nothing is created."
    from steanet.data import DataError
    from steanet.train import fit
    ann = single_files(synth, tmp_path / 'ann')[fmt]
    cfg = make_config('folder', list_overrides(synth, fmt, ann))
    with pytest.raises(DataError, match=f'{ann.name}: one list without a subset column is the training list') as e:
        fit(cfg, run_dir=tmp_path / 'run', progress=False)
    assert '\n' not in str(e.value) and 'data.test_fraction' in str(e.value)
    assert not (tmp_path / 'run').exists() and not mlflow_runs(tmp_path)
    # a stratified carve-out on request: disjoint from train and validation, the same for any train.seed
    from steanet.protocol import resolve_splits
    a = resolve_splits(make_config(cfg, ['data.test_fraction=0.25', 'data.val_fraction=0.25']))
    b = resolve_splits(make_config(cfg, ['data.test_fraction=0.25', 'data.val_fraction=0.25', 'train.seed=9']))
    assert (len(a.train) + len(a.val) + len(a.test), len(a.test)) == (32, 8)
    assert not {r.path for r in a.train + a.val} & {r.path for r in a.test}
    assert [r.path for r in a.test] == [r.path for r in b.test] and [r.path for r in a.val] == [r.path for r in b.val]
    assert a.provenance['test'] == {'source': 'carve-out of train', 'fraction': 0.25, 'seed': 0, 'videos': 8}


def test_a_carved_run_tests_only_videos_it_never_trained_on(synth, tmp_path):
    "A run on one CSV with data.test_fraction: its test predictions are the carved videos; eval reads the same ones."
    from steanet import tracking
    from steanet.train import eval_checkpoint, fit
    torch.set_num_threads(1)
    ann = single_files(synth, tmp_path / 'ann')['csv']
    cfg = make_config('folder', list_overrides(synth, 'csv', ann, **{'data.test_fraction': 0.25, 'train.epochs': 1}))
    r = fit(cfg, run_dir=tmp_path / 'run', progress=False)
    import csv
    tested = {row['video'] for row in csv.DictReader(open(tmp_path / 'run' / 'test_predictions.csv'))}
    assert len(tested) == 8
    client, _, _ = tracking.setup_mlflow(cfg)
    prov = json.loads(client.get_run(r['run_id']).data.tags['steanet.splits'])
    assert prov['test'] == {'source': 'carve-out of train', 'fraction': 0.25, 'seed': 0, 'videos': 8}
    assert prov['train']['videos'] == 24 and prov['train']['source'].endswith('all.csv less its carve-outs')
    from steanet.protocol import resolve_splits
    sp = resolve_splits(cfg)
    assert tested == {x.path for x in sp.test}                  # the resolver gives the run's own test set
    assert not tested & {x.path for x in sp.train}
    m = eval_checkpoint(tmp_path / 'run')                          # the checkpoint's own config: the same carve-out
    assert m['n'] == 8


def overlapping_lists(synth: Path, d: Path, k: int = 3) -> Path:
    "`train.txt` = the set's train + val lists, `test.txt` = its test list plus `k` training videos."
    d.mkdir(parents=True, exist_ok=True)
    tr = (synth / 'train.txt').read_text() + (synth / 'val.txt').read_text()
    (d / 'train.txt').write_text(tr)
    (d / 'test.txt').write_text((synth / 'test.txt').read_text() + ''.join(tr.splitlines(True)[:k]))
    return d


def test_overlapping_lists_are_refused_before_any_run(synth, tmp_path):
    "fit() and `steanet train` refuse a test list holding training videos: one line, the count, no folder, no MLflow run."
    from steanet.data import DataError
    from steanet.train import fit
    ann = overlapping_lists(synth, tmp_path / 'ann')
    ov = list_overrides(synth, 'mmaction', ann)
    with pytest.raises(DataError, match=r'3 of the 24 train videos are also test videos \(3 by path'):
        fit(make_config('folder', ov), run_dir=tmp_path / 'run', progress=False)
    assert not (tmp_path / 'run').exists() and not mlflow_runs(tmp_path)
    # the CLI, in a fresh interpreter: refused before torch is imported (what keeps it well under 2 s)
    import subprocess, sys, time
    code = ('import sys; from steanet.cli import main; rc = main(sys.argv[1:]); '
            'print("RC", rc, "torch" in sys.modules)')
    env = dict(os.environ, OMP_NUM_THREADS='1', STEANET_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, '-c', code, 'train', '--config', 'folder', '--set', *ov],
                         capture_output=True, text=True, env=env, timeout=120)
    took = time.perf_counter() - t0
    assert 'RC 1 False' in out.stdout, (out.stdout, out.stderr)
    err = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and 'are also test videos' in err[0] and 'test.txt' in err[0], err
    assert not any((tmp_path / 'runs').glob('**/*.safetensors')) and not mlflow_runs(tmp_path)
    print(f'steanet train refused overlapping lists in {took:.2f} s (fresh interpreter)')


def test_study_and_splits_use_the_resolver(synth, tmp_path):
    "A study on one list is refused like a run; with a test carve-out, the study never sees the carved test videos."
    from steanet.config import ConfigError
    from steanet.data import DataError
    from steanet.tune import study_records
    from steanet.protocol import resolve_splits, check_splits_differ
    ann = single_files(synth, tmp_path / 'ann')['mmaction']
    cfg = make_config('folder', list_overrides(synth, 'mmaction', ann))
    with pytest.raises(DataError, match='one list without a subset column'): study_records(cfg)
    c = make_config(cfg, ['data.test_fraction=0.25'])
    tr, va, _ = study_records(c)
    test = {r.path for r in resolve_splits(c).test}
    assert len(test) == 8 and not test & {r.path for r in tr + va} and len(tr) + len(va) == 24
    with pytest.raises(ConfigError, match='read the same test videos'): check_splits_differ(c, [1, 2])


def test_config_show_splits(synth, tmp_path):
    "`steanet config show --splits`: the splits a run would read and where each comes from, through the resolver."
    import contextlib, io
    from steanet.cli import main
    ann = single_files(synth, tmp_path / 'ann')['mmaction']
    argv = ['config', 'show', '--config', 'folder', '--splits', '--set', f'data.root={synth}', 'data.format=mmaction',
            f'data.annotations={ann}']
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(argv)
    assert rc == 1 and 'one list without a subset column' in err.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = main([*argv, 'data.test_fraction=0.25', '--json'])
    res = json.loads(out.getvalue().strip().splitlines()[-1])
    assert rc == 0 and res['splits']['provenance']['test']['source'] == 'carve-out of train'
    assert res['splits']['provenance']['test']['videos'] == 8 and res['config']['data']['test_fraction'] == 0.25


def test_fit_makes_the_cli_preflight_checks(synth, tmp_path):
    "fit() from a notebook checks what `steanet train` checks first: the weights file, data.root, the classes."
    from steanet.config import ConfigError
    from steanet.data import DataError
    from steanet.train import fit
    root = folder_dataset(synth, tmp_path / 'd')
    for ov, err, msg in ((['backbone.pretrained=/no/such/weights.safetensors'], ConfigError, 'no such weights file'),
                         (['data.root='], ConfigError, "data.root=''")):
        with pytest.raises(err, match=msg): fit(make_config('folder', folder_overrides(root) + ov), run_dir=tmp_path / 'run', progress=False)
    one = tmp_path / 'one'; (one / 'Joy').mkdir(parents=True); (one / 'Joy' / 'a.mp4').symlink_to(next(synth.glob('videos/joy/*.mp4')))
    with pytest.raises(DataError, match='at least 2 class'):
        fit(make_config('folder', folder_overrides(one)), run_dir=tmp_path / 'run', progress=False)
    assert not (tmp_path / 'run').exists() and not mlflow_runs(tmp_path)


def test_carve_outs_partition_every_single_list():
    "Property: any one CSV list, any fractions and seed: train, val and test partition it, stratified, test disjoint."
    import tempfile
    from hypothesis import given, settings, strategies as st
    from steanet.protocol import resolve_splits

    @settings(max_examples=25, deadline=None, derandomize=True, database=None)
    @given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5), tf=st.floats(0.05, 0.45),
           vf=st.sampled_from([0.0, 0.2, 0.5]), seed=st.integers(0, 2**32 - 1))
    def check(sizes, tf, vf, seed):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d); rows = []
            for c, n in enumerate(sizes):
                (d / f'c{c}').mkdir()
                for i in range(n): (d / f'c{c}' / f'v{i}.mp4').touch(); rows.append(f'c{c}/v{i}.mp4,{c}\n')
            (d / 'one.csv').write_text(''.join(rows))
            cfg = make_config('folder', ['data.format=csv', f'data.root={d}', f'data.annotations={d / "one.csv"}',
                                         f'data.test_fraction={tf}', f'data.val_fraction={vf}', f'data.split_seed={seed}'])
            sp = resolve_splits(cfg)
            parts = [{r.path for r in x} for x in (sp.train, sp.val, sp.test)]
            assert sum(map(len, parts)) == len(rows) == len(set().union(*parts))      # a partition: nothing lost or shared
            for c, n in enumerate(sizes):                                             # stratified, one video at least stays
                k = sum(r.label == c for r in sp.test)
                assert k == (0 if n < 2 else min(max(round(n * tf), 1), n - 1)), (c, n, k)
                assert sum(r.label == c for r in sp.train + sp.val) == n - k
            assert [r.path for r in resolve_splits(make_config(cfg, ['train.seed=5'])).test] == [r.path for r in sp.test]
    check()


def test_a_copy_under_another_name_is_refused_by_the_store_hash(synth, tmp_path):
    "A test video that is a byte copy of a training video: unseen by path, refused by content once a store knows both."
    import shutil
    from steanet.data import DataError, prepare_data
    from steanet.protocol import resolve_splits
    root = tmp_path / 'root'; shutil.copytree(synth / 'videos', root / 'videos')
    shutil.copy(root / 'videos/joy/train_0000.mp4', root / 'videos/joy/copy.mp4')
    ann = tmp_path / 'lists'; ann.mkdir()
    (ann / 'train.txt').write_text((synth / 'train.txt').read_text())
    (ann / 'test.txt').write_text((synth / 'test.txt').read_text() + 'videos/joy/copy.mp4 0\n')
    cfg = make_config('folder', list_overrides(root, 'mmaction', ann))
    assert len(resolve_splits(cfg).test) == 9                     # paths differ: only the content tells
    prepare_data(cfg, tmp_path / 'store', workers=1, progress=False, say=lambda s: None)
    with pytest.raises(DataError, match=r'1 of the 16 train videos are also test videos \(0 by path, 1 by content; e\.g\. train_0000\.mp4'):
        resolve_splits(make_config(cfg, [f'data.store={tmp_path / "store"}']))


def test_a_store_made_from_one_list_has_no_test_split(synth, tmp_path):
    "data.format=store over a store prepared from ONE list: refused like the list, a data.test_fraction carve-out works."
    from steanet.data import DataError, prepare_data
    from steanet.protocol import resolve_splits
    ann = single_files(synth, tmp_path / 'ann')['mmaction']
    cfg = make_config('folder', list_overrides(synth, 'mmaction', ann))
    prepare_data(cfg, tmp_path / 'store', workers=1, progress=False, say=lambda s: None)
    st = make_config(cfg, ['data.format=store', f'data.store={tmp_path / "store"}', 'data.annotations='])
    with pytest.raises(DataError, match='no test list .*data.test_fraction'): resolve_splits(st)
    sp = resolve_splits(make_config(st, ['data.test_fraction=0.25']))
    assert (len(sp.train), len(sp.test)) == (24, 8) and not {r.path for r in sp.train} & {r.path for r in sp.test}
    assert sp.provenance['train']['source'].startswith(f'{tmp_path / "store"} (store, split 1)')
