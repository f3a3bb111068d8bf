"""`steanet report` (issue 21) on an MLflow store holding really trained tiny runs: the rows equal the runs' MLflow
metrics exactly, smoke runs are left out, replications pair by (split, seed), runs that are not one comparison are
refused in one line (and reported with --allow-mixed), a one-run group gets its interval from its test videos, and the
CLI's --json last line has the issue's shape. The statistics themselves are checked in nbs/04d_1_stats.ipynb."""
import contextlib, io, json
from pathlib import Path

import numpy as np
import pytest

from steanet.testing import tiny_overrides


@pytest.fixture(scope='module')
def store(synth_root, tmp_path_factory):
    """Tiny runs in one store: linear_probe and steanet x seeds 0 and 1, a smoke run, and a steanet run tested with 2
    views (not comparable); tracked in the module's own project folder."""
    import torch
    from steanet.config import make_config
    from steanet.testing import project_home
    from steanet.train import fit
    home = tmp_path_factory.mktemp('report-home'); threads = torch.get_num_threads(); torch.set_num_threads(1)
    quick = {'tracking.enabled': 'true', 'tracking.log_model': 'false', 'tracking.log_checkpoint': 'false',
             'tracking.system_metrics': 'false', 'train.epochs': 1, 'data.num_workers': 0, 'tracking.experiment': 'rep'}
    ids = {}
    try:
        with project_home(home):
            for name, kw in {'probe0': {'adapters.variant': 'linear_probe', 'train.seed': 0},
                             'probe1': {'adapters.variant': 'linear_probe', 'train.seed': 1},
                             'stea0': {'train.seed': 0}, 'stea1': {'train.seed': 1},
                             'smoke': {'train.max_steps': 1},
                             'views2': {'train.seed': 0, 'data.num_clips': 2, 'tracking.experiment': 'rep-views'}}.items():
                cfg = make_config('demo', tiny_overrides(synth_root, **{**quick, **kw, 'tracking.run_name': name}))
                ids[name] = fit(cfg, run_dir=home / 'runs' / name, progress=False)['run_id']
    finally: torch.set_num_threads(threads)
    return {'home': home, 'uri': f'sqlite:///{home}/mlruns/mlflow.db', 'ids': ids}


def _report(store, tmp_path, **kw):
    from steanet.report import ReportConfig
    from steanet.report_out import report
    return report(ReportConfig(uri=store['uri'], n_boot=999, n_boot_videos=500, **kw), tmp_path / 'out')


def test_rows_equal_the_runs_metrics_and_pair_by_seed(store, tmp_path):
    from mlflow.tracking import MlflowClient
    c = MlflowClient(store['uri'])
    rep = _report(store, tmp_path, experiments=('rep',))
    assert [g['label'] for g in rep['groups']] == ['linear_probe', 'steanet'] and rep['baseline'] == 'linear_probe'
    assert 'left out 1 smoke runs' in rep['notes'], rep['notes']
    for g, names in zip(rep['groups'], (('probe0', 'probe1'), ('stea0', 'stea1'))):
        assert {r['run_id'] for r in g['replications']} == {store['ids'][n] for n in names}
        assert [(r['split'], r['seed']) for r in g['replications']] == [(1, 0), (1, 1)]
        for m in ('top1', 'mean_class_acc', 'macro_f1'):
            logged = [c.get_run(store['ids'][n]).data.metrics[f'test/{m}'] for n in names]
            assert g[m]['mean'] == float(np.mean(logged)) and g[m]['std'] == float(np.std(logged, ddof=1))
        assert g['tunable_params'] == int(c.get_run(store['ids'][names[0]]).data.tags['tunable_params']) and g['gflops'] > 0
    comp = rep['comparisons'][0]
    assert (comp['a'], comp['b'], comp['n_pairs']) == ('steanet', 'linear_probe', 2)
    assert comp['p_paired'] is not None and comp['p_holm'] == comp['p'] and len(comp['mcnemar']) == 2
    assert all(m['n'] == 8 for m in comp['mcnemar'])           # the 8 test videos each pair of runs read
    rj = json.loads((tmp_path / 'out' / 'report.json').read_text())
    assert rj['run_id'] == rep['run_id'] and c.get_run(rep['run_id']).data.tags['steanet.kind'] == 'report'


def test_one_run_groups_use_their_test_videos(store, tmp_path):
    from mlflow.tracking import MlflowClient
    ids = store['ids']
    rep = _report(store, tmp_path, runs=(ids['probe0'], ids['stea0']), log=False)
    st = next(g for g in rep['groups'] if g['label'] == 'steanet')
    assert st['n'] == 1 and st['top1']['mean'] == MlflowClient(store['uri']).get_run(ids['stea0']).data.metrics['test/top1']
    assert st['top1']['std'] is None and st['top1']['ci_kind'] == 'bootstrap, 8 test videos'
    comp = rep['comparisons'][0]
    assert comp['p_paired'] is None and comp['p'] == comp['p_mcnemar'] and comp['n_pairs'] == 1


def test_not_one_comparison_is_refused_unless_allow_mixed(store, tmp_path):
    from steanet.report import ReportError
    with pytest.raises(ReportError, match=r'differ in test views \(1x1 vs 2x1\).*--allow-mixed'):
        _report(store, tmp_path, experiments=('rep', 'rep-views'), log=False)
    rep = _report(store, tmp_path, experiments=('rep', 'rep-views'), log=False, allow_mixed=True)
    assert any(n.startswith('mixed (--allow-mixed)') and 'test views' in n for n in rep['notes'])
    by = _report(store, tmp_path / 'b', experiments=('rep', 'rep-views'), log=False, by=('variant', 'data.num_clips'))
    assert len(by['groups']) == 3                               # grouped by the views: a comparison of views, not refused


def test_cli_json_last_line(store, tmp_path, monkeypatch):
    from steanet.cli import main
    monkeypatch.setenv('MLFLOW_TRACKING_URI', store['uri'])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(['report', '--experiment', 'rep', '--out', str(tmp_path / 'cli'), '--n-boot', '999', '--json'])
    assert rc == 0, err.getvalue()[-2000:]
    j = json.loads(out.getvalue().strip().splitlines()[-1])
    g = j['groups'][1]
    assert g['by'] == 'steanet' and g['n'] == 2 and set(g['top1']) >= {'mean', 'std', 'ci'} and len(g['top1']['ci']) == 2
    assert isinstance(g['tunable_params'], int) and g['gflops'] > 0
    assert set(j['comparisons'][0]) >= {'a', 'b', 'diff', 'ci', 'p_mcnemar', 'p_paired', 'p_holm'} and j['run_id']
    assert '| steanet |' in err.getvalue() and 'baseline: linear_probe' in err.getvalue()
    assert (tmp_path / 'cli' / 'table.tex').read_text().startswith('\\begin{tabular}')


def test_demo_ends_with_its_report(tmp_path):
    """A tiny tracked demo (two variants) ends with the report of its runs: one row per variant whose numbers are the
    runs' MLflow metrics exactly, and the McNemar comparison on their shared test videos."""
    import torch
    from mlflow.tracking import MlflowClient
    from steanet.demo import run_demo
    from steanet.testing import project_home
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        with project_home(tmp_path):
            r = run_demo(overrides=['train.epochs=1', 'data.num_frames=4', 'tracking.log_model=false',
                                    'tracking.system_metrics=false', f'data.root={tmp_path / "videos"}'],
                         variants=('linear_probe', 'steanet'), n_per_class=2, test_per_class=2, video_frames=8,
                         pretrain={'steps': 5, 'n_images': 256, 'batch_size': 32, 'cache': str(tmp_path / 'bb')},
                         progress=False, publish=False)
    finally: torch.set_num_threads(threads)
    rep, c = r['report'], MlflowClient(r['tracking_uri'])
    assert [g['by'] for g in rep['groups']] == ['linear_probe', 'steanet'] and rep['baseline'] == 'linear_probe'
    for g in rep['groups']:
        run = c.get_run(r['runs'][g['by']]['run_id'])
        assert g['n'] == 1 and all(g[m]['mean'] == run.data.metrics[f'test/{m}'] for m in ('top1', 'mean_class_acc', 'macro_f1'))
        assert g['top1']['ci_kind'].startswith('bootstrap') and g['tunable_params'] == int(run.data.tags['tunable_params'])
    comp = rep['comparisons'][0]
    assert comp['a'] == 'steanet' and comp['p_mcnemar'] is not None and comp['mcnemar'][0]['n'] == 16
    assert c.get_run(rep['run_id']).data.tags['steanet.kind'] == 'report' and '| steanet |' in rep['markdown']


def test_splits_ends_with_its_report(synth_root, tmp_path):
    "`steanet splits` prints the report of its split runs: one row, n = the splits, the mean of their test top-1."
    from test_train import two_split_lists
    from steanet.cli import main
    ov = tiny_overrides(synth_root, **{'tracking.enabled': 'true', 'train.epochs': 1, 'tracking.log_model': 'false',
                                       'tracking.system_metrics': 'false', 'data.num_workers': 0})
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(['splits', '--config', 'demo', '--splits', '1,2', '--quiet', '--json', '--set', *ov,
                   *two_split_lists(synth_root, tmp_path / 'lists')])
    assert rc == 0, err.getvalue()[-2000:]
    j = json.loads(out.getvalue().strip().splitlines()[-1])
    g = j['report']['groups'][0]
    assert g['by'] == 'steanet' and g['n'] == 2 and [r['split'] for r in g['replications']] == [1, 2]
    assert g['top1']['mean'] == float(np.mean([j['splits'][s]['test/top1'] for s in ('1', '2')])) and g['top1']['ci']
    assert '| steanet | 2 |' in err.getvalue() and 'one group: nothing to compare' in err.getvalue() and 'steanet report --experiment' in err.getvalue()
