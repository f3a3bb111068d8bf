"""steanet.model / steanet.adapters / steanet.bench: what reads better as pytest than as notebook cells.

The notebooks 01_adapters and 02_model hold the method's own tests (identity at init, reach, leakage, learning);
here: the official fixture via the shared fixtures, resolutions x frame counts, checkpoint formats, QuickGELU,
autocast, checkpointing, torch.compile graph breaks and the bench commands (`bench model`, `bench data`). Everything
runs on tiny ViTs and the fixture videos.
"""
import io
import json
import logging
from contextlib import redirect_stdout

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import open_clip
from open_clip.model import CLIPVisionCfg, _build_vision_tower
from open_clip.transformer import QuickGELU

from steanet.config import make_config, AdapterConfig
from steanet.model import (STEANet, build_model, load_official_checkpoint, count_parameters, mark_trainable,
                           tunable_state_dict, load_tunable_state_dict, check_backbone, save_backbone_weights,
                           RandomBackboneError, BackboneError, file_sha256)

logging.getLogger().setLevel(logging.ERROR)  # open_clip warns about random weights on every tiny build


def tiny(variant='steanet', T=4, **kw):
    kw.setdefault('pretrained', None); kw.setdefault('allow_random_backbone', True)
    return build_model(backbone='steanet-tiny', num_classes=5, num_frames=T, variant=variant, **kw)


def vit(image_size, patch, width=64, layers=2, heads=2, quick_gelu=False):
    "A plain open_clip VisionTransformer of any geometry (as open_clip builds it)."
    cfg = CLIPVisionCfg(width=width, layers=layers, head_width=width // heads, patch_size=patch, image_size=image_size)
    return _build_vision_tower(width, cfg, quick_gelu=quick_gelu)


def randomise(model, std=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad: p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


# ---------------------------------------------------------------- the official release's numerics
def _check_fixture(model, ref):
    with torch.no_grad():
        feats, logits = model.forward_features(ref['input']), model(ref['input'])
    d_feat = (rearrange(feats, 'b t d -> b d t 1 1') - ref['backbone_output']).abs().max().item()
    d_logit = (logits - ref['logits']).abs().max().item()
    assert d_feat < 1e-5 and d_logit < 1e-5, (d_feat, d_logit)


def test_official_fixture(fixtures_dir):
    from safetensors.torch import load_file
    d = fixtures_dir / 'official_reference'
    meta = json.loads((d / 'official_tiny_meta.json').read_text())
    m = load_official_checkpoint(d / 'official_tiny_checkpoint.safetensors', heads=meta['backbone']['heads'])
    assert not m.training and m.variant == 'official'
    assert (m.num_frames, m.num_classes, m.width) == (4, 8, 64)
    assert m.meta['sha256'] == file_sha256(d / 'official_tiny_checkpoint.safetensors')
    _check_fixture(m, load_file(d / 'official_tiny_io.safetensors'))


def test_official_fixture_as_mmaction_pth(fixtures_dir, tmp_path):
    "The same checkpoint as MMAction2 writes it (.pth, {'state_dict': ..., 'meta': ...}, DDP 'module.' prefix off)."
    from safetensors.torch import load_file
    d = fixtures_dir / 'official_reference'
    sd = load_file(d / 'official_tiny_checkpoint.safetensors')
    torch.save({'meta': {'epoch': 30}, 'state_dict': sd}, tmp_path / 'epoch_30.pth')
    m = load_official_checkpoint(tmp_path / 'epoch_30.pth', heads=2)
    _check_fixture(m, load_file(d / 'official_tiny_io.safetensors'))
    # a tensor missing, one renamed: the error lists both
    sd2 = dict(sd); sd2['backbone.transformer.resblocks.0.TEA.extra'] = sd2.pop('backbone.transformer.resblocks.1.SEA.conv2d.bias')
    torch.save(sd2, tmp_path / 'broken.pth')
    with pytest.raises(ValueError, match='missing.*resblocks.1.SEA.conv2d.bias(.|\n)*unexpected.*TEA.extra'):
        load_official_checkpoint(tmp_path / 'broken.pth', heads=2)
    with pytest.raises(ValueError, match='not divisible'):
        load_official_checkpoint(d / 'official_tiny_checkpoint.safetensors', heads=3)


def test_official_variant_mixes_samples_and_refuses_other_token_counts():
    "Documents the release's defect that `official` reproduces: its .view leaks one sample into another."
    torch.manual_seed(0)
    m = randomise(tiny('official', T=2, image_size=56)).eval()      # 14x14 patches: 197 tokens
    x = torch.randn(2, 3, 2, 56, 56); x2 = x.clone(); x2[1] += 1
    with torch.no_grad(): a, b = m(x), m(x2)
    assert not torch.equal(a[0], b[0])
    with pytest.raises(ValueError, match='197 tokens'):
        tiny('official')(torch.randn(1, 3, 4, 32, 32))


def test_aim_release_checkpoint(tmp_path):
    "An AIM-style MMAction2 checkpoint (with num_tadapter=2) loads as the aim variant with the same outputs."
    torch.manual_seed(0)
    m = randomise(tiny('aim', num_tadapter=2)).eval()
    sd = {}
    for k, v in m.state_dict().items():
        if k == 'visual.proj': continue
        if k == 'temporal_embedding.weight': sd['backbone.temporal_embedding'] = v
        elif k.startswith('visual.'): sd['backbone.' + k[7:]] = v
        elif k.startswith('head.fc.'): sd['cls_head.fc_cls.' + k[8:]] = v
    torch.save({'state_dict': sd}, tmp_path / 'aim.pth')
    m2 = load_official_checkpoint(tmp_path / 'aim.pth', heads=2, quick_gelu=False)
    assert m2.variant == 'aim' and m2.adapters.num_tadapter == 2 and m2.meta['backbone'] == 'steanet-tiny'  # geometry matched
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad(): torch.testing.assert_close(m2(x), m(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- geometry: resolutions x frame counts
@pytest.mark.parametrize('size,patch', [(32, 8), (224, 16), ((32, 48), 8)], ids=['32px-p8-17tok', '224-p16-197tok', '32x48-p8'])
@pytest.mark.parametrize('T', [1, 4, 16])
def test_geometry(size, patch, T):
    torch.manual_seed(0)
    v = vit(size, patch)
    ref = vit(size, patch); ref.load_state_dict(v.state_dict()); ref.proj = None
    m = mark_trainable(STEANet(v, num_classes=3, num_frames=T, meta={'pretrained': None, 'allow_random_backbone': True}))
    H, W = (size, size) if isinstance(size, int) else size
    x = torch.randn(2, 3, T, H, W)
    with torch.no_grad():
        want = rearrange(ref(rearrange(x, 'b c t h w -> (b t) c h w')), '(b t) d -> b t d', t=T)
        got = m.forward_features(x)
    assert (got - want).abs().max() < 1e-5          # identity at init at this geometry
    randomise(m)
    F.cross_entropy(m(x), torch.tensor([0, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)


def test_no_leakage_train_mode_all_variants():
    for variant in ('steanet', 'aim', 'linear_probe'):
        torch.manual_seed(0)
        m = randomise(tiny(variant, dropout=0., drop_path_rate=0.)).train()
        x = torch.randn(3, 3, 4, 32, 32); x2 = x.clone(); x2[2] = torch.randn_like(x2[2])
        with torch.no_grad(): a, b = m(x), m(x2)
        assert torch.equal(a[:2], b[:2]), variant


def test_drop_path_is_per_sample():
    "Stochastic depth drops a sample's branch in all its frames together, and keeps the expectation."
    from steanet.model import drop_path
    x = torch.ones(64 * 3, 5, 2)
    y = rearrange(drop_path(x, 0.5, True, 64), '(b t) n d -> b (t n d)', b=64)
    assert all((r == 0).all() or (r == 2).all() for r in y)
    assert 0 < (y[:, 0] == 0).sum() < 64
    assert torch.equal(drop_path(x, 0.5, False, 64), x)
    torch.manual_seed(0)
    m = randomise(tiny('steanet', drop_path_rate=0.5, dropout=0.)).train()
    xb = torch.randn(2, 3, 4, 32, 32)
    torch.manual_seed(1); a = m(xb)
    torch.manual_seed(1); b = m(xb)
    torch.testing.assert_close(a, b)                 # the draw is the only randomness


# ---------------------------------------------------------------- weights in and out
def test_backbone_weight_formats(tmp_path):
    torch.manual_seed(0)
    clip = open_clip.create_model('steanet-tiny')
    full = tmp_path / 'clip_full.pt'; torch.save(clip.state_dict(), full)                  # a full CLIP state dict
    wrapped = tmp_path / 'wrapped.pth'; torch.save({'state_dict': clip.state_dict()}, wrapped)
    x = torch.randn(1, 3, 4, 32, 32)
    outs = []
    for p in (full, wrapped):
        m = build_model(backbone='steanet-tiny', pretrained=str(p), num_classes=2, num_frames=4)
        assert m.meta['pretrained'] == str(p) and m.meta['sha256'] == file_sha256(p)
        check_backbone(m)                                  # real weights: no error
        with torch.no_grad(): outs.append(m.forward_features(x))
    torch.testing.assert_close(outs[0], outs[1])
    bad = tmp_path / 'junk.pt'; torch.save({'foo': torch.zeros(1)}, bad)
    with pytest.raises(BackboneError, match='junk.pt'):
        build_model(backbone='steanet-tiny', pretrained=str(bad), num_classes=2)
    with pytest.raises(BackboneError, match='load_official_checkpoint'):
        torch.save({'backbone.conv1.weight': torch.zeros(1)}, tmp_path / 'mm.pth')
        build_model(backbone='steanet-tiny', pretrained=str(tmp_path / 'mm.pth'), num_classes=2)
    with pytest.raises(BackboneError, match='unknown open_clip model'):
        build_model(backbone='ViT-Nope', pretrained=None, num_classes=2)


def test_quick_gelu_follows_the_weights(tmp_path, monkeypatch):
    import open_clip.factory as fac
    monkeypatch.setitem(fac._MODEL_CONFIGS, 'steanet-tiny-quickgelu', {**fac._MODEL_CONFIGS['steanet-tiny'], 'quick_gelu': True})
    act = lambda m: type(m.visual.transformer.resblocks[0].mlp.gelu)
    assert act(tiny()) is torch.nn.GELU
    m = build_model(backbone='steanet-tiny-quickgelu', pretrained=None, num_classes=2, num_frames=4)
    assert act(m) is QuickGELU and m.meta['quick_gelu']
    p = save_backbone_weights(m, tmp_path / 'qg.safetensors')
    m2 = build_model(backbone='steanet-tiny', pretrained=str(p), num_classes=2, num_frames=4)   # name says GELU,
    assert act(m2) is QuickGELU                                                                 # weights say QuickGELU
    assert act(build_model(backbone='steanet-tiny', pretrained=str(p), num_classes=2, quick_gelu=False)) is torch.nn.GELU


def test_tunable_state_dict_roundtrip_and_errors():
    torch.manual_seed(0); m = randomise(tiny())
    sd = tunable_state_dict(m)
    assert set(sd) == {n for n, p in m.named_parameters() if p.requires_grad}
    assert not any(k.endswith(('attn.in_proj_weight', 'mlp.c_fc.weight', 'conv1.weight')) for k in sd)
    torch.manual_seed(0); m2 = load_tunable_state_dict(tiny(), sd)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad(): torch.testing.assert_close(m.eval()(x), m2.eval()(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match='shape mismatch'):
        load_tunable_state_dict(tiny(T=8), sd)
    with pytest.raises(ValueError, match='missing'):
        load_tunable_state_dict(tiny(), {k: v for k, v in sd.items() if 'TEA' not in k})


def test_build_from_config_and_random_guard():
    cfg = make_config('demo')
    m = build_model(cfg)
    assert (m.num_frames, m.num_classes, m.variant) == (cfg.data.num_frames, cfg.data.num_classes, 'steanet')
    check_backbone(m)                                      # the demo preset allows a random backbone
    cfg2 = make_config('demo', ['backbone.allow_random_backbone=false', 'adapters.tea_ratio=0', 'adapters.sea_kernel=5'])
    m2 = build_model(cfg2)
    with pytest.raises(RandomBackboneError, match='allow_random_backbone'): check_backbone(m2)
    assert 'tea' not in count_parameters(m2)['by_kind'] and m2.visual.transformer.resblocks[0].SEA.kernel == 5
    for k in ('backbone', 'pretrained', 'sha256', 'variant', 'image_size', 'patch_size', 'num_frames', 'num_classes',
              'width', 'mean', 'std'):
        assert k in m.meta, k
    json.dumps(m.meta)                                     # plain JSON for checkpoints and MLflow
    with pytest.raises(TypeError, match='unknown keyword'): build_model(cfg, tea_size=3)
    with pytest.raises(ValueError, match='num_classes'):
        build_model(backbone='steanet-tiny', pretrained=None)


def test_train_ln_post_switch_and_freezing_by_type():
    m = tiny(train_ln_post=False)
    assert not any(p.requires_grad for p in m.visual.ln_post.parameters())
    mark_trainable(m, train_ln_post=True)
    assert all(p.requires_grad for p in m.visual.ln_post.parameters())
    assert not m.visual.proj.requires_grad and not m.visual.ln_pre.weight.requires_grad
    c = count_parameters(m)
    assert c['total'] == sum(p.numel() for p in m.parameters()) - m.visual.proj.numel()
    assert c['excluded'] == {'visual.proj': m.visual.proj.numel()}


# ---------------------------------------------------------------- fast path: autocast, checkpointing, compile
def test_fast_path_matches_mha_path():
    torch.manual_seed(0); a = randomise(tiny(fast_attention=True)).eval()
    torch.manual_seed(0); b = randomise(tiny(fast_attention=False)).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad(): torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)


def test_autocast_bf16_and_grad_checkpointing():
    torch.manual_seed(0); m = randomise(tiny(dropout=0.)).train()
    x, y = torch.randn(1, 3, 4, 32, 32), torch.tensor([3])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = m(x)
    F.cross_entropy(out.float(), y).backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
    grads = {}
    for ckpt in (False, True):
        m.zero_grad(); m.set_grad_checkpointing(ckpt)
        F.cross_entropy(m(x), y).backward()
        grads[ckpt] = {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}
    for n in grads[False]: torch.testing.assert_close(grads[True][n], grads[False][n], atol=1e-6, rtol=1e-5)


def test_torch_compile_has_no_graph_breaks():
    import torch._dynamo as dynamo
    m = tiny().train()
    m.set_grad_checkpointing(True)
    e = dynamo.explain(m)(torch.randn(2, 3, 4, 32, 32))
    assert e.graph_break_count == 0 and e.graph_count == 1, [str(b.reason) for b in e.break_reasons]


# ---------------------------------------------------------------- the bench command
def test_bench_model_cli_json():
    from steanet.bench import bench_cli
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = bench_cli(['model', '--backbone', 'steanet-tiny', '--image-size', '56', '--frames', '2', '--batch', '1',
                        '--steps', '1', '--warmup', '0', '--json'])
    assert rc == 0
    r = json.loads(buf.getvalue().strip().splitlines()[-1])
    for k in ('device', 'backbone', 'frames', 'batch', 'variants', 'gemm_flops_per_s'): assert k in r, k
    for v in ('official', 'steanet'):
        for k in ('train_clips_per_s', 'infer_clips_per_s', 'peak_mem_mb', 'tunable_params', 'train_flops'):
            assert k in r['variants'][v], (v, k)
        assert r['variants'][v]['train_clips_per_s'] > 0
    assert r['frames'] == 2 and r['backbone'] == 'steanet-tiny'


def test_bench_cli_dispatch(capsys):
    from steanet.bench import bench_cli
    assert bench_cli(['--help']) == 0
    assert 'steanet.data' in capsys.readouterr().out     # `bench data` times the data pipeline of steanet.data
    assert bench_cli(['nope']) == 2


def test_bench_data_cli_smoke(fixtures_dir, capsys):
    "`steanet bench data` through bench's dispatcher: one row per decoder, every clip decoded."
    from steanet.bench import bench_cli
    rc = bench_cli(['data', '--fixtures', str(fixtures_dir / 'videos'), '--sets', 'fixtures', '--workers', '0',
                    '--decoders', 'decord', 'pyav', '--clips', '2', '--batch', '1', '--frames', '4', '--size', '64',
                    '--short-side', '72', '--json'])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and len(out['results']) == 2 and all(r['clips_per_s'] > 0 and r['n_bad'] == 0 for r in out['results'])
