"""Video data: decoding agreement on the real fixture videos, a corpus of broken files through check-data and the
dataset (no crash, a report line per file), containers whose frame count lies, GIF, the check-data CLI (`bench data` is
tested with the bench command in test_model.py)."""
import json, os, shutil, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from steanet.config import DataConfig
from steanet.data import (VideoRecord, DecodeError, PyAVReader, build_dataloader, build_dataset, check_data,
                          find_fixtures, open_video, read_frames, video_info, write_video)

ROOT = Path(__file__).resolve().parents[1]
NORM = dict(mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)      # CLIP's, as model.meta has them
VIDEOS = {'demo_340x256_h264.mp4': (280, 256, 340), 'test_320x240_mpeg4.avi': (164, 240, 320), 'short_32frames.mp4': (32, 256, 340)}


@pytest.fixture(scope='module')
def videos():
    fx = find_fixtures()
    if fx is None or not (fx / 'videos').is_dir(): pytest.skip('shared fixtures (real videos) not present')
    return fx / 'videos'


@pytest.mark.parametrize('name', list(VIDEOS))
def test_backends_agree_on_real_videos(videos, name):
    "decord and PyAV: same frame count, identical frames over the whole video and on random index sets."
    n, h, w = VIDEOS[name]
    a, b = open_video(videos / name, 'decord'), open_video(videos / name, 'pyav')
    assert (a.num_frames, b.num_frames) == (n, n)
    fa, fb = a.get(np.arange(n)), b.get(np.arange(n))
    assert fa.shape == (n, h, w, 3)
    assert np.array_equal(fa, fb), f'mean abs diff {np.abs(fa.astype(float) - fb).mean():.4f}'
    rng = np.random.default_rng(0)
    for _ in range(3):                                  # PyAV's random access is frame-exact (vs the sequential decode)
        idx = rng.integers(0, n, 12)
        assert np.array_equal(open_video(videos / name, 'pyav').get(idx), fa[idx])
    assert open_video(videos / name).backend == ('pyav' if name.endswith('.avi') else 'decord')
    # reduced-size decoding: both through FFmpeg's scaler, nearly the same pixels
    # (whole sequences: decord's random access on AVI returns a wrong frame ~1% of the time, dmlc/decord#195)
    sa, sb = read_frames(videos / name, np.arange(n), 'decord', short_side=112), read_frames(videos / name, np.arange(n), 'pyav', short_side=112)
    assert sa.shape == sb.shape and min(sa.shape[1:3]) == 112
    diff = np.abs(sa.astype(float) - sb).mean(); print(f'{name}: reduced-size mean abs diff {diff:.3f}')
    assert diff < 1.0
    info = video_info(videos / name, 'pyav'); assert info['num_frames'] == n and info['fps'] > 0


def _broken_corpus(videos: Path, d: Path) -> dict:
    "{path: kind} of >= 50 broken or odd files made from the real fixtures."
    rng = np.random.default_rng(0); out = {}
    srcs = [videos / n for n in VIDEOS]
    for src in srcs:
        data = src.read_bytes()
        for frac in (0.0005, 0.002, 0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.97, 0.999):
            p = d / f'trunc_{int(frac * 1000):04d}_{src.name}'; p.write_bytes(data[:max(1, int(len(data) * frac))]); out[p] = 'truncated'
        for k in range(4):
            b = bytearray(data); pos = rng.integers(0, len(b), 200 * (k + 1))
            for q in pos: b[q] ^= 0xFF
            p = d / f'flip{k}_{src.name}'; p.write_bytes(bytes(b)); out[p] = 'flipped'
        b = bytearray(data); s = len(b) // 3; b[s:s + 20000] = bytes(20000)
        p = d / f'zeroed_{src.name}'; p.write_bytes(bytes(b)); out[p] = 'zeroed block'
    for k in range(3):
        p = d / f'random{k}.mp4'; p.write_bytes(rng.integers(0, 256, 2000 * (k + 1), dtype=np.uint8).tobytes()); out[p] = 'random'
    for ext in ('.mp4', '.avi', '.mkv'):
        p = d / f'empty{ext}'; p.touch(); out[p] = 'zero bytes'
    p = d / 'notes.mp4'; p.write_text('these are not the frames you are looking for\n' * 50); out[p] = 'text'
    p = d / 'image.mp4'; p.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(500)); out[p] = 'png header'
    p = d / 'mp4_named.avi'; shutil.copy(srcs[2], p); out[p] = 'wrong extension (valid)'
    p = d / 'avi_named.mkv'; shutil.copy(srcs[1], p); out[p] = 'wrong extension (valid)'
    p = d / 'one_frame.mp4'; write_video(p, np.full((1, 32, 32, 3), 100, np.uint8)); out[p] = 'one frame'
    return out


def test_broken_corpus_check_data_and_dataset(videos, tmp_path):
    "check-data: a line per file, none crashes this process; the dataset reads the corpus without dying (child process)."
    d = tmp_path / 'corpus'; d.mkdir()
    corpus = _broken_corpus(videos, d)
    assert len(corpus) >= 50
    recs = [VideoRecord(str(p), 0, 'x') for p in sorted(corpus)]
    s = check_data(records=recs, workers=2, report=tmp_path / 'report.csv', progress=False, timeout=60)
    lines = (tmp_path / 'report.csv').read_text().strip().splitlines()
    assert len(lines) == len(corpus) + 1
    import csv
    rows = {r['path']: r for r in csv.DictReader(lines)}
    assert set(rows) == {str(p) for p in corpus}
    assert s['ok'] + s['bad'] == len(corpus)
    for p, kind in corpus.items():
        st = rows[str(p)]['status']
        assert st in ('ok', 'too_short', 'zero_frames', 'unreadable', 'crash', 'timeout')
        if kind in ('zero bytes', 'random', 'text', 'png header'): assert st == 'unreadable', (p, st, rows[str(p)]['reason'])
        if kind == 'wrong extension (valid)': assert st == 'ok', (p, rows[str(p)]['reason'])
        if kind == 'one frame': assert st == 'too_short'
        if kind == 'truncated' and '_0000_' in p.name: assert st != 'ok'
    print(json.dumps(s['by_status']))
    # the training dataset over the same corpus (+ one good video so substitutes exist), in a child process so that a
    # native crash would show as a signal instead of killing pytest
    good = videos / 'short_32frames.mp4'
    prog = textwrap.dedent(f'''
        import json, sys, warnings, logging
        logging.disable(logging.WARNING)
        from steanet.config import DataConfig
        from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        from steanet.data import VideoRecord, build_dataset
        paths = json.load(open({str(tmp_path / "paths.json")!r}))
        recs = [VideoRecord(p, 0, 'x') for p in paths] + [VideoRecord({str(good)!r}, 0, 'x')]
        dc = DataConfig(num_frames=8, input_size=64, short_side=64, decoder=sys.argv[1])
        ds = build_dataset(dc, 'train', records=recs, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
        ds.max_subs = len(recs)
        n_bad = sum(ds[i]['n_bad'] for i in range(len(recs)))
        print(json.dumps(dict(n_bad=n_bad, bad=len(ds.bad))))
    ''')
    (tmp_path / 'paths.json').write_text(json.dumps([str(p) for p in sorted(corpus)]))
    for dec in ('auto', 'pyav'):
        r = subprocess.run([sys.executable, '-c', prog, dec], capture_output=True, text=True, timeout=600,
                           env={**os.environ, 'PYTHONPATH': str(ROOT)})
        assert r.returncode == 0, f'{dec}: rc {r.returncode}\n{r.stderr[-3000:]}'
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res['bad'] >= 8 and res['n_bad'] >= res['bad'], res


def test_frame_count_when_the_container_lies(videos, tmp_path):
    "MKV stores no count (header 0) and a truncated AVI's header claims all 164 frames: the packet index wins."
    frames = np.random.default_rng(0).integers(0, 255, (20, 32, 48, 3), dtype=np.uint8)
    mkv = write_video(tmp_path / 'a.mkv', frames, fps=10)
    r = PyAVReader(mkv); assert r.header_frames == 0 and r.num_frames == 20 and abs(r.fps - 10) < 1e-6
    assert open_video(mkv, 'decord').num_frames == 20
    data = (videos / 'test_320x240_mpeg4.avi').read_bytes()
    (tmp_path / 't.avi').write_bytes(data[:len(data) // 2])
    r = PyAVReader(tmp_path / 't.avi')
    assert r.header_frames == 164 and 40 < r.num_frames < 164
    last = r.get([r.num_frames - 1]); assert last.shape == (1, 240, 320, 3)


def test_gif_through_pyav(tmp_path):
    import av
    p = tmp_path / 'x.gif'
    with av.open(str(p), 'w') as c:
        s = c.add_stream('gif', rate=10); s.width, s.height, s.pix_fmt = 40, 30, 'rgb8'
        for t in range(12):
            f = np.zeros((30, 40, 3), np.uint8); f[:, t * 3:t * 3 + 4] = 255
            for pk in s.encode(av.VideoFrame.from_ndarray(f, format='rgb24')): c.mux(pk)
        for pk in s.encode(): c.mux(pk)
    r = open_video(p)                                   # auto: decord does not read GIF, PyAV does
    assert r.backend == 'pyav' and r.num_frames == 12
    fr = r.get([0, 11]); assert fr.shape == (2, 30, 40, 3) and fr[1, :, 33:37].mean() > 200
    ds = build_dataset(DataConfig(num_frames=4, input_size=24, short_side=24), 'test', records=[VideoRecord(str(p), 0, 'a')], **NORM)
    assert ds[0]['video'].shape == (3, 4, 24, 24)


def test_loader_workers_bad_items_and_seeded_sampling(videos, tmp_path):
    bad = tmp_path / 'bad.mp4'; bad.write_bytes(os.urandom(3000))
    recs = [VideoRecord(str(videos / n), i % 2, 'ab'[i % 2]) for i, n in enumerate(VIDEOS)] + [VideoRecord(str(bad), 1, 'b')]
    dc = DataConfig(num_frames=4, input_size=48, short_side=56, num_workers=2)
    torch.manual_seed(0)
    batches = list(build_dataloader(dc, 'train', records=recs, batch_size=2, **NORM))
    assert sum(int(b['n_bad'].sum()) for b in batches) == 1 and all(b['video'].shape == (2, 3, 4, 48, 48) for b in batches)
    ds = build_dataset(dc, 'train', records=recs, **NORM)
    torch.manual_seed(5); a = ds.load(0)[1]; torch.manual_seed(5); b = ds.load(0)[1]; torch.manual_seed(6); c = ds.load(0)[1]
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])


def test_check_data_cli_on_split_class_layout(videos, tmp_path, capsys):
    root = tmp_path / 'ds'
    for split, cls, src in [('train', 'Joy', 'short_32frames.mp4'), ('train', 'Fear', 'test_320x240_mpeg4.avi'),
                            ('test', 'Joy', 'short_32frames.mp4')]:
        (root / split / cls).mkdir(parents=True, exist_ok=True); shutil.copy(videos / src, root / split / cls / f'v{src[-4:]}')
    (root / 'test' / 'Fear').mkdir(); (root / 'test' / 'Fear' / 'broken.mp4').write_bytes(b'\0' * 100)
    from steanet.cli import main
    rc = main(['check-data', str(root), '--json', '--report', str(tmp_path / 'r.csv')])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 1 and out['ok'] == 3 and out['bad'] == 1 and out['classes'] == ['Fear', 'Joy']
    assert Path(out['report']).is_file() and out['by_status']['unreadable'] == 1
    assert Path(out['report']).with_suffix('.summary.json').is_file()
