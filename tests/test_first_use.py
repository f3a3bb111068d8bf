"""First use (issue 23): `config show` lists the data a run reads, including how much of it a prepared store holds,
on real fixture videos (nothing is decoded by config show; prepare-data decodes them once)."""
import contextlib, io, json, shutil

import pytest


def _cli(args) -> tuple:
    from steanet.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def test_config_show_counts_the_store_coverage(fixtures_dir, tmp_path):
    v = fixtures_dir / 'videos'; root = tmp_path / 'videos'
    for cls, name in (('joy', 'demo_340x256_h264.mp4'), ('joy', 'short_32frames.mp4'), ('fear', 'test_320x240_mpeg4.avi')):
        (root / cls).mkdir(parents=True, exist_ok=True); shutil.copy(v / name, root / cls / name)
    store, small = tmp_path / 'store', [f'data.root={root}', 'data.short_side=32', 'data.input_size=32']
    rc, out, err = _cli(['prepare-data', '--config', 'folder', '--set', *small, '--out', str(store), '--workers', '0',
                         '--short-side', '32', '--quiet', '--json'])
    assert rc == 0, err
    shutil.copy(v / 'short_32frames.mp4', root / 'fear' / 'later.mp4')        # a video added after the store was made
    rc, out, err = _cli(['config', 'show', '--config', 'folder', '--set', *small, f'data.store={store}', '--json'])
    assert rc == 0, err
    data = json.loads(out.strip().splitlines()[-1])['data']
    assert [(c['index'], c['name'], c['train']) for c in data['classes']] == [(0, 'fear', 2), (1, 'joy', 2)]
    assert {k: data['store'][k] for k in ('videos', 'prepared', 'bad', 'missing')} == \
        {'videos': 4, 'prepared': 3, 'bad': 0, 'missing': 1}
    assert '3 of 4 videos prepared' in err and '1 missing' in err, err
