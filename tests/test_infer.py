"""Evaluation never substitutes (issue 20): a test set with one unreadable video reports N-1 videos read and
`n_bad = 1`, every video counted once, `test_bad.csv` and the tag `steanet.test_videos` as CONTRACT says; DDP's
gather gives the same N, the same unreadable list and the same probabilities as one process."""
import csv, hashlib, json, os, subprocess, sys
from pathlib import Path

import pytest
import torch

from steanet.testing import tiny_overrides

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


def test_a_test_set_with_one_unreadable_video_reports_n_minus_1(tmp_path):
    "The final test reads N-1 of N videos: metrics over those, the unreadable one listed, none counted twice."
    import mlflow
    from steanet.synthetic import make_synthetic_dataset
    from steanet.testing import project_home
    from steanet.train import fit
    root = make_synthetic_dataset(tmp_path / 'videos', n_per_class=1, val_per_class=1, test_per_class=1, frames=6, seed=5)
    good = [l.split()[0] for l in (root / 'test.txt').read_text().split('\n') if l.strip()]
    broken = 'videos/broken_clip.mp4'
    (root / broken).write_bytes(b'not a video at all' * 20)
    with open(root / 'test.txt', 'a') as f: f.write(f'{broken} 3\n')            # N = 9 test videos, one unreadable
    with project_home(tmp_path / 'home'):
        res = fit('demo', overrides=tiny_overrides(root, **{'data.format': 'synthetic', 'train.epochs': 1,
                                                            'tracking.enabled': 'true', 'tracking.log_model': 'false',
                                                            'tracking.system_metrics': 'false'}), progress=False)
        m = res['metrics']
        assert (m['test/n_videos'], m['test/n_bad']) == (len(good), 1)
        assert (m['val/n_videos'], m['val/n_bad']) == (8, 0)
        rows = list(csv.DictReader(open(Path(res['run_dir']) / 'test_predictions.csv', newline='')))
        top1 = [r['video'] for r in rows if r['rank'] == '1']
        assert len(top1) == len(set(top1)) == len(good)                      # every video read once, none twice
        assert sorted(Path(v).relative_to(root).as_posix() for v in top1) == sorted(good)
        bad = list(csv.reader(open(Path(res['run_dir']) / 'test_bad.csv', newline='')))
        assert bad[0] == ['key', 'reason'] and [b[0] for b in bad[1:]] == [broken] and bad[1][1], bad
        client = mlflow.MlflowClient(f'sqlite:///{tmp_path / "home"}/mlruns/mlflow.db'); run = client.get_run(res['run_id'])
        assert run.data.tags['steanet.test_videos'] == hashlib.sha256('\n'.join(sorted(good)).encode()).hexdigest()
        assert run.data.metrics['test/n_videos'] == len(good) and run.data.metrics['test/n_bad'] == 1
        assert run.data.metrics['val/n_videos'] == 8 and run.data.metrics['val/n_bad'] == 0
        assert 'test_bad.csv' in {a.path for a in client.list_artifacts(res['run_id'])}
        # the metrics are those of the 8 videos read: top-1 equals the share of correct rank-1 rows
        hits = sum(r['class'] == r['true_class'] for r in rows if r['rank'] == '1')
        assert m['test/top1'] == pytest.approx(hits / len(good))


_DDP = '''
import json, os, sys, torch, torch.distributed as dist
from steanet.infer import InferOptions, predict_dataset
class Items:
    "7 toy clips (3 x 2 x 4 x 4); item 3 cannot be read (the marker an evaluation dataset returns)."
    def __len__(self): return 7
    def __getitem__(self, i):
        if i == 3: return {'index': 3, 'label': 0, 'bad': 'zero frames'}
        g = torch.Generator().manual_seed(i)
        return {'video': torch.randn(3, 2, 4, 4, generator=g), 'label': i % 3, 'index': i, 'n_partial': int(i == 5)}
torch.set_num_threads(1); torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(96, 3))
world = int(os.environ.get('WORLD_SIZE', 1)); rank = int(os.environ.get('RANK', 0))
if world > 1: dist.init_process_group('gloo')
r = predict_dataset(net, Items(), InferOptions(batch_size=2, rank=rank, world=world))
out = {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in r.items()}
out['bad'] = {str(k): v for k, v in r['bad'].items()}
open(f"{sys.argv[1]}/r{world}-{rank}.json", 'w').write(json.dumps(out))
if world > 1: dist.destroy_process_group()
'''


def test_ddp_gather_keeps_n_and_the_unreadable_list(tmp_path):
    """2 gloo processes over 7 items (the sampler pads rank 1 with item 0 again), item 3 unreadable: the gathered set is
    the single process's (6 videos, 1 unreadable, the same probabilities and loss) on both ranks."""
    script = tmp_path / 'ddp_predict.py'; script.write_text(_DDP)
    env = dict(os.environ, PYTHONPATH=f'{ROOT}{os.pathsep}{os.environ.get("PYTHONPATH", "")}', OMP_NUM_THREADS='1')
    one = subprocess.run([PY, str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([PY, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', str(script),
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    ref = json.loads((tmp_path / 'r1-0.json').read_text())
    assert ref['indices'] == [0, 1, 2, 4, 5, 6] and (ref['n_videos'], ref['n_bad'], ref['n_partial']) == (6, 1, 1)
    assert ref['bad'] == {'3': 'zero frames'}
    for rank in (0, 1):
        got = json.loads((tmp_path / f'r2-{rank}.json').read_text())
        for k in ('indices', 'labels', 'n_videos', 'n_bad', 'n_partial', 'bad', 'partial'): assert got[k] == ref[k], k
        torch.testing.assert_close(torch.tensor(got['probs']), torch.tensor(ref['probs']), rtol=0, atol=1e-6)
        assert got['loss'] == pytest.approx(ref['loss'], abs=1e-6)
