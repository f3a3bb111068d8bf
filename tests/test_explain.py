"""steanet.explain: Captum attributions as (T, H, W) maps, their sanity, and the measures that score them."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import reduce
from torch import nn

from steanet.config import ExplainConfig
from steanet import explain as ex
from steanet.cli import main
from steanet.testing import ToyVideoNet


CFG = ExplainConfig(ig_steps=64, internal_batch_size=16, occlusion_window=(1, 4, 4), occlusion_stride=(1, 4, 4))


def _clip(seed=0, T=4, S=16):
    return torch.randn(3, T, S, S, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('ignored', [0, 2, 3])
def test_every_method_gives_an_ignored_frame_zero(ignored):
    model = ToyVideoNet(ignore_frame=ignored, seed=ignored)
    res = ex.explain_clip(model, _clip(ignored), methods=list(ex.CAPTUM_METHODS), cfg=CFG)   # relevance needs a STEANet
    assert sorted(res) == sorted(ex.CAPTUM_METHODS)
    targets = {a.target for a in res.values()}
    assert len(targets) == 1                                  # every method explains the same (predicted) class
    for m, a in res.items():
        assert a.map.shape == (4, 16, 16) and a.curve.shape == (4,), m
        others = [t for t in range(4) if t != ignored]
        assert a.map[ignored].abs().max() <= 1e-6 * a.map.abs().max(), (m, a.map[ignored].abs().max())
        assert a.map[others].abs().sum() > 0, m
    assert res['ig'].channels.shape == (3, 4, 16, 16) and res['saliency'].channels.shape == (3, 4, 16, 16)
    assert res['tokens'].tokens.shape == (4, 4, 4)


@pytest.mark.parametrize('baseline', ['blur', 'black'])
def test_integrated_gradients_is_complete(baseline):
    model = ToyVideoNet(seed=5); x = _clip(5)[None]
    a = ex.integrated_gradients(model, x, target=1, cfg=CFG, baseline=baseline)
    b = ex.make_baseline(x, baseline)
    with torch.no_grad(): fx, fb = model(torch.cat([x, b]))[:, 1]
    assert abs(float(a.map.sum() - (fx - fb))) < 1e-3 * max(1.0, abs(float(fx - fb)))
    assert a.delta < 1e-3 and a.target == 1
    # internal_batch_size bounds the batch but not the result
    small = ex.integrated_gradients(model, x, target=1, cfg=ExplainConfig(ig_steps=64, internal_batch_size=4),
                                    baseline=baseline)
    assert torch.allclose(small.map, a.map, atol=1e-5)


def test_token_ig_equals_pixel_ig_pooled_per_patch():
    "The patch embedding is linear, so token IG = pixel IG summed per patch; frame and patch order must match."
    model = ToyVideoNet(seed=2, frames=4); x = _clip(2)
    tk = ex.token_attribution(model, x, cfg=CFG)
    ig = ex.integrated_gradients(model, x, target=tk.target, cfg=CFG)
    assert torch.allclose(tk.tokens, reduce(ig.map, 't (gh ph) (gw pw) -> t gh gw', 'sum', ph=4, pw=4), atol=1e-4)
    assert torch.allclose(tk.map.sum(), tk.tokens.sum(), atol=1e-5) and tk.delta < 1e-3
    gxa = ex.token_attribution(model, x, cfg=CFG, mode='gxa')
    assert gxa.map.shape == (4, 16, 16)


def test_temporal_curve_is_the_drop_per_ablated_frame():
    model = ToyVideoNet(seed=4); x = ex.as_clip(_clip(4))
    tp = ex.temporal_ablation(model, x, cfg=CFG)
    b = ex.make_baseline(x, 'blur'); drops = []
    with torch.no_grad():
        for t in range(4):
            xt = x.clone(); xt[:, :, t] = b[:, :, t]
            drops.append(float(model(x)[0, tp.target] - model(xt)[0, tp.target]))
    assert torch.allclose(tp.curve, torch.tensor(drops), atol=1e-5)


def test_occlusion_window_and_stride_in_frames_and_pixels():
    model = ToyVideoNet(seed=6, ignore_frame=3)
    a = ex.occlusion(model, _clip(6), cfg=ExplainConfig(occlusion_window=(1, 8, 8), occlusion_stride=(1, 4, 4)))
    assert a.map.shape == (4, 16, 16) and a.map[3].abs().max() < 1e-6
    b = ex.occlusion(model, _clip(6), cfg=ExplainConfig(occlusion_window=(2, 4, 4), occlusion_stride=(2, 4, 4)))
    assert torch.allclose(b.map[2], b.map[3])                 # one 2-frame window covers frames 2 and 3


def test_measures_on_a_model_that_looks_at_one_region():
    model = ToyVideoNet(region=(slice(0, 2), slice(0, 2)), seed=3)
    mask = torch.zeros(4, 16, 16, dtype=torch.bool); mask[:, :8, :8] = True
    items = [dict(video=_clip(10 + k), mask=mask, name=f'c{k}', label=0) for k in range(3)]
    out = ex.evaluate_attributions(model, items, ['ig', 'saliency', 'occlusion', 'tokens', 'temporal'], cfg=CFG,
                                   steps=8, n_random=3)
    for m in ('ig', 'saliency', 'occlusion', 'tokens'):
        s = out['summary'][m]
        assert s['hit_rate'] == pytest.approx(1.0) and s['mass_in_mask'] == pytest.approx(1.0, abs=1e-4)
        assert s['mask_share'] == pytest.approx(0.25) and s['mass_ratio'] == pytest.approx(4.0, abs=1e-3)
        assert s['deletion_auc'] < s['deletion_auc_random'] and s['insertion_auc'] > s['insertion_auc_random'], (m, s)
    assert out['summary']['temporal']['hit_rate'] is None    # a per-frame curve has no spatial peak
    assert 'hit' in ex.summary_table(out)


def test_pointing_game_and_mass_edge_cases():
    mask = torch.zeros(2, 8, 8, dtype=torch.bool); mask[0, :4, :4] = True      # frame 1 has no mask: not counted
    peak_in = torch.zeros(2, 8, 8); peak_in[0, 1, 1] = 1; peak_in[1, 7, 7] = 5
    assert ex.pointing_game(peak_in, mask) == (1.0, 1)
    tied = torch.zeros(2, 8, 8); tied[:, 2:6, 0:1] = 1                          # 4 tied peak pixels, 2 inside
    assert ex.pointing_game(tied, mask) == (0.5, 1)
    assert ex.mass_in_mask(-peak_in, mask) == pytest.approx(1 / 6)              # absolute mass by default
    assert ex.mass_in_mask(-peak_in, mask, sign='positive') != ex.mass_in_mask(-peak_in, mask, sign='positive')  # nan: no positive mass
    with pytest.raises(ValueError, match='sample_mask'): ex.mass_in_mask(peak_in, mask[:1])
    up = ex._fit_mask(torch.ones(2, 4, 4), (2, 8, 8)); assert up.shape == (2, 8, 8) and up.all()


def test_deletion_of_the_true_map_beats_random_and_curves_meet_at_the_baseline():
    model = ToyVideoNet(region=(slice(2, 4), slice(0, 4)), seed=8)
    x = _clip(8); a = ex.integrated_gradients(model, x, cfg=CFG)
    di = ex.deletion_insertion(model, x, a.map, a.target, cfg=CFG, steps=8, n_random=4)
    assert di['deletion_auc'] < di['deletion_auc_random'] and di['insertion_auc'] > di['insertion_auc_random']
    assert len(di['deletion_curve']) == 9
    assert di['deletion_curve'][-1] == pytest.approx(di['insertion_curve'][0], abs=1e-6)   # all removed = baseline
    assert di['deletion_curve'][0] == pytest.approx(di['insertion_curve'][-1], abs=1e-6)   # nothing removed = clip


def test_bad_inputs_say_what_to_do():
    model = ToyVideoNet()
    with pytest.raises(ValueError, match='methods'): ex.attribute(model, _clip(), 'gradcam')
    with pytest.raises(ValueError, match='one at a time'): ex.as_clip(torch.zeros(2, 3, 4, 16, 16))
    with pytest.raises(ValueError, match='blur or black'): ex.make_baseline(_clip()[None], 'grey')
    with pytest.raises(ValueError, match='visual.conv1'): ex.token_attribution(nn.Sequential(), _clip())
    with pytest.raises(ValueError, match='out of range'): ex.integrated_gradients(model, _clip(), target=7)


def test_figures_and_gifs_are_written(tmp_path):
    from PIL import Image
    model = ToyVideoNet(seed=1)
    res = ex.explain_clip(model, _clip(1), methods=['ig', 'occlusion', 'temporal'], cfg=CFG)
    w = ex.ClipWriter(tmp_path, class_names=['joy', 'fear', 'awe'], max_figures=1)
    w(dict(video=_clip(1), name='clip0', label=1), res); w(dict(video=_clip(2), name='clip1', label=1), res)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ['clip0.ig.gif', 'clip0.occlusion.gif', 'clip0.png', 'clip0.temporal.gif']   # max_figures=1
    with Image.open(tmp_path / 'clip0.ig.gif') as im:                   # readable: 16 px frames enlarged to 224, captioned
        assert im.n_frames == 4 and im.size[0] == 2 * 224 and im.size[1] > 224, im.size
    assert Image.open(tmp_path / 'clip0.png').format == 'PNG'


def test_outputs_go_to_an_mlflow_run(tmp_path):
    "Figures, GIFs and the summary measures land in the given run (local sqlite store under STEANET_HOME)."
    from steanet.config import get_preset
    from steanet.tracking import setup_mlflow
    cfg = get_preset('demo')
    client, exp_id, uri = setup_mlflow(cfg, experiment='explain-test')
    run_id = client.create_run(exp_id).info.run_id
    model = ToyVideoNet(region=(slice(0, 2), slice(0, 2)), seed=3)
    mask = torch.zeros(4, 16, 16, dtype=torch.bool); mask[:, :8, :8] = True
    out = tmp_path / 'explain'
    res = ex.evaluate_attributions(model, [dict(video=_clip(3), mask=mask, name='c0', label=0)], ['ig', 'occlusion'],
                                   cfg=CFG, steps=4, n_random=1, on_clip=ex.ClipWriter(out, max_figures=1))
    ex.log_explanation(run_id, out, res, cfg)
    arts = sorted(a.path for a in client.list_artifacts(run_id, 'explain'))
    assert arts == ['explain/c0.ig.gif', 'explain/c0.occlusion.gif', 'explain/c0.png', 'explain/table.json']  # + log_table
    m = client.get_run(run_id).data.metrics
    assert m['explain.ig.hit_rate'] == pytest.approx(1.0) and 'explain.occlusion.deletion_auc_random' in m


def _square_clips(n, seed, frame=2, amp=3.0):
    "Noise clips (4 frames, 32 px); class 1 has a bright 8x8 square at rows 8:16, cols 16:24 of frame `frame` only."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 4, 32, 32, generator=g) * 0.5
    y = torch.arange(n) % 2
    x[y == 1, :, frame, 8:16, 16:24] += amp
    return x, y


def test_relevance_locates_the_region_and_frame_the_class_depends_on():
    """A tiny STEANet trained until its class depends on one known region of one known frame (the square exists only
    there, only in class 1): relevance puts each class-1 clip's peak there and its per-frame curve peaks at that frame."""
    import torch.nn.functional as F
    from steanet.testing import tiny_model
    torch.manual_seed(0)
    m = tiny_model(T=4, num_classes=2)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3, weight_decay=0)
    for step in range(100):
        x, y = _square_clips(16, step); loss = F.cross_entropy(m.train()(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    m.eval(); x, y = _square_clips(32, 1000)
    with torch.no_grad(): acc = float((m(x).argmax(-1) == y).float().mean())
    assert acc >= 0.9, acc                                            # the class really depends on the square
    mask = torch.zeros(4, 32, 32, dtype=torch.bool); mask[2, 8:16, 16:24] = True
    gone = x.clone(); gone[:, :, 2, 8:16, 16:24] -= 3.0                # the same clips without the square
    with torch.no_grad(): drop = m(x).softmax(-1)[:, 1] - m(gone).softmax(-1)[:, 1]
    depends = [i for i in range(len(y)) if y[i] == 1 and drop[i] > 0.5]   # clips whose class the square decides
    assert len(depends) >= 4, drop
    when = []
    for i in depends[:6]:
        a = ex.relevance(m, x[i], target=1)
        hits, n = ex.pointing_game(a.map, mask)
        assert (hits, n) == (1.0, 1), (i, hits)                       # frame 2's peak is on the square
        assert ex.mass_in_mask(a.map, mask) >= 3 * float(mask.float().mean()), (i, ex.mass_in_mask(a.map, mask))
        when.append(int(a.curve.argmax()) == 2)                       # the per-frame score (peak) points at frame 2
    # the "when" is weaker than the "where": on some clips the positive part of the gradient-weighted attention leaves
    # little relevance on any patch and the per-frame peaks are nearly equal (reported, not hidden)
    assert sum(when) >= 0.6 * len(when), when


def test_relevance_and_adapters_on_the_official_checkpoint(fixtures_dir):
    """The release's fixture checkpoint (variant official, 224 px, 197 tokens, TEA/SEA in the release's forms): the
    explain-only path gives its logits to 1e-5, relevance and rollout give (T, H, W) maps, every adapter kind is ablated."""
    from safetensors.torch import load_file
    from steanet.model import load_official_checkpoint
    d = fixtures_dir / 'official_reference'
    meta = json.loads((d / 'official_tiny_meta.json').read_text())
    m = load_official_checkpoint(d / 'official_tiny_checkpoint.safetensors', heads=meta['backbone']['heads']).eval()
    io_ = load_file(d / 'official_tiny_io.safetensors')
    x = io_['input'][:1]
    with torch.no_grad():
        fast = m(x)
        with ex.AttentionRecorder(m) as rec: slow = m(x)
    assert (fast - slow).abs().max() < 1e-5 and rec.maps[0]['spatial'].shape[-1] == 197
    for fn in (ex.relevance, ex.rollout):
        a = fn(m, x[0]); assert a.map.shape == (4, 224, 224) and a.tokens.shape == (4, 14, 14) and a.map.sum() > 0
    r = ex.adapter_attribution(m, x[0])
    assert set(r['kind_drop']) == {'S', 'T', 'MLP', 'TEA', 'SEA'} and len(r['table']) == 2
    assert all(v is not None for row in r['table'] for v in row)     # the release keeps every adapter in every block
    assert abs(sum(abs(v) for v in r['share'].values()) - 1) < 1e-6


# ---------------------------------------------------------------------------------------------------------------
# On trained STEANet models (trained once per test session by the demo's own code, in a session temp project)
# ---------------------------------------------------------------------------------------------------------------

def _train_demo(tmp_path_factory, name, quick):
    from steanet.demo import demo_checkpoint
    from steanet.testing import project_home
    with project_home(tmp_path_factory.mktemp(name)): return demo_checkpoint(quick=quick)


@pytest.fixture(scope='session')
def quick_model(tmp_path_factory):
    "A small demo-style STEANet (`demo.QUICK_DEMO`: fewer videos, pre-training steps and epochs), for the CLI."
    return _train_demo(tmp_path_factory, 'quick_demo', quick=True)


@pytest.fixture(scope='session')
def demo_model(tmp_path_factory):
    "The demo's trained `steanet` model: `run_demo` with the demo's recipe, only the `steanet` variant, no MLflow."
    return _train_demo(tmp_path_factory, 'demo', quick=False)


def _per_class(records, k):
    "The first `k` test records of every class."
    out = []
    for c in sorted({r.label for r in records}): out += [r for r in records if r.label == c][:k]
    return out


FULL = pytest.mark.skipif(not __import__('os').environ.get('STEANET_SLOW_TESTS'),
                          reason='trains the full demo model (minutes on 2 cores); set STEANET_SLOW_TESTS=1')


@FULL
def test_acceptance_on_the_demo_model(demo_model):
    """Issue 7's acceptance on 24 synthetic test clips (3 per class): pointing game >= 0.9 (IG) and >= 0.7 (Occlusion,
    1x4x4 windows), mass in the masks >= 4x their pixel share for both, deletion AUC below random for every method.
    IG with the blurred baseline these numbers were stated for (issue 22 made black IG's default: it passes the
    randomisation check, blurred-baseline IG does not; black IG's mass in mask on the 128 clips is 3.4x the share)."""
    from steanet.data import load_records
    model, meta, cfg = ex.load_explain_model(demo_model)
    cfg.explain.ig_baseline = 'blur'
    assert meta['config']['adapters']['variant'] == 'steanet'
    mean, std = ex.model_norm(model)
    items = list(ex.clip_items(cfg, _per_class(load_records(cfg.data, 'test')[0], 3), mean, std, meta['class_names']))
    assert len(items) == 24 and all(it['mask'] is not None and it['mask'].any() for it in items)
    res = ex.evaluate_attributions(model, items, list(ex.METHODS), cfg.explain, steps=8, n_random=2)
    print('\n' + ex.summary_table(res))
    s = res['summary']
    assert res['accuracy'] >= 0.9, res['accuracy']
    assert s['ig']['hit_rate'] >= 0.9, s['ig']
    assert s['occlusion']['hit_rate'] >= 0.7, s['occlusion']
    for m in ('ig', 'occlusion'): assert s[m]['mass_in_mask'] >= 4 * s[m]['mask_share'], (m, s[m])
    for m, r in s.items(): assert r['deletion_auc'] < r['deletion_auc_random'], (m, r)

@FULL
def test_issue22_acceptance_on_the_demo_model(demo_model):
    """Issue 22 on the demo's 128 test clips, in one run, as measured (`steanet explain ... --method relevance rollout
    ig saliency temporal --sanity 8 --adapters`, numbers in 07c): relevance points at the disc at least as often as IG
    (IG with its default black baseline), IG and relevance pass the randomisation check on 8 clips spread over the
    classes, each on the map it computes (IG's pixels, relevance's token grid; relevance's bilinearly upsampled pixel
    map is reported beside, and the check fails on that), the adapters' shares are measured on every clip and the
    temporal adapters (T + TEA) carry most of the decision. Its speed target (<= 1/10 of IG's seconds) is a timing,
    reported from the CLI run, not asserted here."""
    from steanet.data import load_records
    model, meta, cfg = ex.load_explain_model(demo_model)
    mean, std = ex.model_norm(model)
    items = list(ex.clip_items(cfg, load_records(cfg.data, 'test')[0], mean, std, meta['class_names']))
    assert len(items) == 128
    res = ex.evaluate_attributions(model, items, ['relevance', 'ig'], cfg.explain, faithfulness=False, sanity=8,
                                   adapters=True, total=len(items))
    print('\n' + ex.markdown_table(res))
    s = res['summary']
    assert len({r['label'] for r in res['clips'] if r['name'] in res['sanity_clips']}) == 8   # one clip of each class
    assert s['relevance']['hit_rate'] >= s['ig']['hit_rate'], (s['relevance']['hit_rate'], s['ig']['hit_rate'])
    assert s['ig']['sanity']['passed'] and s['ig']['sanity']['map'] == 'pixels', res['sanity']['ig']
    assert s['relevance']['sanity']['passed'] and s['relevance']['sanity']['map'] == 'tokens', res['sanity']['relevance']
    assert res['adapters']['temporal_share']['mean'] > 0.5 and res['adapters']['clips'] == 128


def test_explain_cli_on_a_dataset(quick_model, tmp_path):
    import contextlib, io
    from steanet.tracking import setup_mlflow
    from steanet.config import get_preset
    ck = quick_model
    client, exp_id, _ = setup_mlflow(get_preset('demo'), experiment='explain-cli')
    run_id = client.create_run(exp_id).info.run_id
    out = tmp_path / 'ds'; buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(['explain', '--checkpoint', str(ck), '--dataset', 'checkpoint', '--limit', '2', '--method', 'relevance',
                   'ig', 'temporal', '--out', str(out), '--steps', '4', '--random', '1', '--max-figures', '1', '--faithfulness',
                   '--sanity', '1', '--adapters', '--mlflow-run', run_id, '--set', 'explain.ig_steps=8', '--json'])
    assert rc == 0
    j = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert sorted(j) == ['adapters', 'clips', 'methods', 'run_id']          # the issue's --json shape, exactly
    assert j['clips'] == 2 and set(j['methods']) == {'relevance', 'ig', 'temporal'} and j['run_id'] == run_id
    for m, r in j['methods'].items():
        assert sorted(r) == ['deletion_auc', 'insertion_auc', 'mass_in_mask', 'pointing_game', 'sanity', 'seconds_per_clip'], m
        assert sorted(r['sanity']) == ['map', 'pass', 'spearman', 'spearman_pixels', 'ssim'], m
        assert isinstance(r['sanity']['pass'], bool) and r['sanity']['map'] == ('tokens' if m == 'relevance' else 'pixels'), m
        assert r['deletion_auc'] is not None and r['seconds_per_clip'] > 0, m
    assert j['methods']['ig']['pointing_game'] is not None and j['methods']['relevance']['pointing_game'] is not None
    assert set(j['adapters']) == {'S', 'T', 'MLP', 'TEA', 'SEA'}
    assert sum(abs(v) for v in j['adapters'].values()) <= 1 + 1e-6     # means of signed shares whose |.| sum to 1 per clip
    assert (out / 'summary.json').exists() and len(list(out.glob('*.png'))) == 3     # 1 clip figure + adapters + sanity
    table = (out / 'table.md').read_text()
    assert '| relevance |' in table and 'Spearman' in table and '< 0.5' in table and '| TEA |' in table
    clips = (out / 'clips.csv').read_text().splitlines()
    assert len(clips) == 3 and clips[0].startswith('clip,label,target,pred,prob,correct,relevance.pointing_game')
    arts = {a.path for a in client.list_artifacts(run_id, 'explain')}
    assert arts >= {'explain/summary.json', 'explain/table.md', 'explain/clips.csv', 'explain/adapters.png',
                    'explain/sanity.png', 'explain/table.json'}, arts
    # errors name the problem
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(['explain', '--checkpoint', str(ck), str(tmp_path / 'missing.mp4'), '--json']) == 1
        assert main(['explain', '--checkpoint', str(ck), '--json']) == 1
    lines = [json.loads(l) for l in buf.getvalue().strip().splitlines()]
    assert 'missing.mp4' in lines[0]['error'] and 'nothing to explain' in lines[1]['error']


def test_explain_cli_on_real_video_files(quick_model, tmp_path, fixtures_dir):
    "A real H.264 file (not synthetic), resized to the model's 32 px: maps and files, no masks, so no pointing game."
    import contextlib, io
    ck = quick_model
    out2 = tmp_path / 'videos'; buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(['explain', '--checkpoint', str(ck), str(fixtures_dir / 'videos' / 'short_32frames.mp4'),
                   '--method', 'saliency', '--out', str(out2), '--no-faithfulness', '--json'])
    assert rc == 0
    j = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert j['clips'] == 1 and j['methods']['saliency']['pointing_game'] is None
    assert (out2 / 'short_32frames.png').exists() and (out2 / 'short_32frames.saliency.gif').exists()
    # a file that cannot be decoded, next to a good one: the good one is explained, the bad one listed, exit 1
    bad = tmp_path / 'broken.mp4'; bad.write_bytes(b'not a video')
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = main(['explain', '--checkpoint', str(ck), str(bad), str(fixtures_dir / 'videos' / 'short_32frames.mp4'),
                   '--method', 'saliency', '--out', str(tmp_path / 'mixed'), '--no-faithfulness', '--json'])
    j = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert rc == 1 and j['clips'] == 1 and [s['path'] for s in j['skipped']] == [str(bad)], (rc, j, err.getvalue())
    # a class the model does not have is refused before any work, in one line
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err := io.StringIO()):
        rc = main(['explain', '--checkpoint', str(ck), str(fixtures_dir / 'videos' / 'short_32frames.mp4'),
                   '--target', '99', '--out', str(tmp_path / 'target')])
    assert rc == 1 and '--target 99' in err.getvalue() and not (tmp_path / 'target').exists(), err.getvalue()
