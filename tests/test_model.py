"""steanet.model / steanet.adapters / steanet.bench: what reads better as pytest than as notebook cells.

The notebooks 01_adapters and 02_model hold the method's own tests (identity at init, reach, leakage, learning);
here: the official fixture via the shared fixtures, resolutions x frame counts, checkpoint formats, QuickGELU,
autocast, checkpointing, torch.compile graph breaks and the bench commands (`bench model`, `bench data`). Everything
runs on tiny ViTs and the fixture videos.
"""
import io
import json
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
from steanet.testing import tiny_model as tiny, randomise_adapters as randomise   # steanet-tiny, 5 classes, random backbone



def vit(image_size, patch, width=64, layers=2, heads=2, quick_gelu=False):
    "A plain open_clip VisionTransformer of any geometry (as open_clip builds it)."
    cfg = CLIPVisionCfg(width=width, layers=layers, head_width=width // heads, patch_size=patch, image_size=image_size)
    return _build_vision_tower(width, cfg, quick_gelu=quick_gelu)


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
    from steanet.cli import main
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(['bench', 'model', '--backbone', 'steanet-tiny', '--image-size', '56', '--frames', '2', '--batch', '1',
                        '--steps', '1', '--warmup', '0', '--json'])
    assert rc == 0
    r = json.loads(buf.getvalue().strip().splitlines()[-1])
    for k in ('device', 'backbone', 'frames', 'batch', 'variants', 'gemm_flops_per_s'): assert k in r, k
    for v in ('official', 'steanet'):
        for k in ('train_clips_per_s', 'infer_clips_per_s', 'peak_mem_mb', 'tunable_params', 'train_flops'):
            assert k in r['variants'][v], (v, k)
        assert r['variants'][v]['train_clips_per_s'] > 0
        parts = r['variants'][v]['saved_by_part']
        assert {'attention', 'norm'} <= set(parts), parts
        assert abs(sum(parts.values()) - r['variants'][v]['saved_bytes_per_clip']) < 1, v
    assert r['frames'] == 2 and r['backbone'] == 'steanet-tiny'
    c = r['steanet_vs_official']
    assert c['saved_bytes_ratio'] == r['variants']['steanet']['saved_bytes_per_clip'] / r['variants']['official']['saved_bytes_per_clip']
    assert c['saved_bytes_ratio'] < 0.6                            # the default recompute keeps less than the release
    assert r['variants']['official']['recompute'] == 'off' and r['variants']['steanet']['recompute'] == 'mlp 3/4'  # share 0.67 of 4 blocks
    assert r['gemm_reference']['flops_per_s'] == r['gemm_flops_per_s'] and r['gemm_reference']['threads'] >= 1
    assert all(v['train_vs_gemm_bound'] > 0 for v in r['variants'].values())


def test_bench_model_recompute_off_keeps_what_plain_autograd_keeps():
    from steanet.bench import bench_model
    r = bench_model(backbone='steanet-tiny', image_size=56, frames=2, steps=1, warmup=0, device='cpu', recompute='off')
    s, o = r['variants']['steanet'], r['variants']['official']
    assert s['recompute'] == 'off' and 0.9 < r['steanet_vs_official']['saved_bytes_ratio'] < 1.1
    assert s['saved_by_part'].get('mlp', 0) > 0 and o['saved_by_part']['mlp'] > 0
    h = bench_model(backbone='steanet-tiny', image_size=56, frames=2, steps=1, warmup=0, device='cpu', variants=('steanet',),
                    recompute='mlp', mlp_share=0.5)['variants']['steanet']
    assert h['recompute'] == 'mlp 2/4' and h['saved_bytes_per_clip'] < s['saved_bytes_per_clip']


def test_bench_cli_dispatch(capsys):
    from steanet.cli import main
    assert main(['bench', '--help']) == 0
    assert 'steanet.data' in capsys.readouterr().out     # `bench data` times the data pipeline of steanet.data
    assert main(['bench', 'nope']) == 2
    capsys.readouterr()
    # the default variants include `official`, which a backbone without 14x14 patches cannot run: one line, exit 1
    assert main(['bench', 'model', '--backbone', 'steanet-tiny', '--frames', '2', '--steps', '1']) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and '197 tokens' in err and '--variants steanet' in err, err


def test_bench_data_cli_smoke(fixtures_dir, capsys):
    "`steanet bench data` through the CLI: one row per decoder, every clip decoded."
    from steanet.cli import main
    rc = main(['bench', 'data', '--fixtures', str(fixtures_dir / 'videos'), '--sets', 'fixtures', '--workers', '0',
                    '--decoders', 'decord', 'pyav', '--clips', '2', '--batch', '1', '--frames', '4', '--size', '64',
                    '--short-side', '72', '--seconds', '0.3', '--json'])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and len(out['results']) == 2 and all(r['clips_per_s'] > 0 and r['n_bad'] == 0 for r in out['results'])
    assert all(r['seconds'] >= 0.3 and r['clips'] >= 2 for r in out['results'])       # the steady window, after start-up
    assert main(['bench', 'data', '--store', 'x', '--rounds', '0']) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'rounds=0' in err, err


def test_bench_explain_cli(fixtures_dir, capsys):
    "`steanet bench explain` through the CLI on the real fixture videos: one row per video and method, ratios against the last."
    from steanet.cli import main
    rc = main(['bench', 'explain', '--fixtures', str(fixtures_dir / 'videos'), '--backbone', 'steanet-tiny', '--frames', '2',
               '--ig-steps', '2', '--methods', 'relevance', 'ig', '--json', '--quiet'])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out['videos'] == 3 and len(out['results']) == 6 and out['ratio']['ig'] == 1.0, out
    assert all(r['seconds'] > 0 for r in out['results']) and out['seconds_per_clip']['relevance'] > 0
    assert main(['bench', 'explain', '--methods', 'relevance', 'lime']) == 1
    assert 'choose from' in capsys.readouterr().err


# ---------------------------------------------------------------- official in train mode: the release's drop path
def _timm_drop_path(x, p, training):
    "timm's drop_path (scale_by_keep) as the release calls it on its seq-first (n, b*t, d) tensors."
    if p == 0. or not training:
        return x
    keep = 1 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    if keep > 0:
        mask.div_(keep)
    return x * mask


def _release_block(blk, x, T, p, training):
    """The release's block written from its description (shared/fixtures/README.md and issue 11), seq-first x (n, b*t, d):
    x + drop_path(T_Adapter(attn(ln_1(xt)))) + TEA(ln_1(xt)); x + S_Adapter(attn(ln_1(x))) with SEA on the patch
    tokens; x + mlp(ln_2(x)) + drop_path(scale * MLP_Adapter(ln_2(x))). Only those two branches are dropped."""
    n, bt, d = x.shape
    b = bt // T

    def attn(z):                                   # the block's frozen nn.MultiheadAttention on seq-first z
        if blk.attn.batch_first:
            return blk.attn(z.transpose(0, 1), z.transpose(0, 1), z.transpose(0, 1), need_weights=False)[0].transpose(0, 1)
        return blk.attn(z, z, z, need_weights=False)[0]

    xt = x.view(n, b, T, d).permute(2, 1, 0, 3).reshape(T, b * n, d)          # n (b t) d -> t (b n) d
    xt_ln = blk.ln_1(xt)
    ta = blk.T_Adapter(attn(xt_ln)).view(T, b, n, d).permute(2, 1, 0, 3).reshape(n, b * T, d)
    tea = blk.TEA
    h = tea.D_fc1(xt_ln)                                                       # (T, b*n, C)
    c = h.shape[-1]
    h = tea.conv1d(h.contiguous().view(b * n, c, T)).contiguous().view(T, b * n, c)   # .view, not a permute
    x = x + _timm_drop_path(ta, p, training) + tea.D_fc2(h).contiguous().view(n, b * T, d)
    x_ln = blk.ln_1(x)
    xs = blk.S_Adapter(attn(x_ln))
    sea, m = blk.SEA, n - 1
    h = sea.D_fc1(x_ln[1:])                                                    # (M, b*t, C)
    h = h.view(14, 14, bt, c).permute(2, 3, 0, 1).contiguous()                  # the one real permute
    h = sea.conv2d(h).contiguous().view(m, bt, c)                              # reinterpreted back, no permute
    xs = torch.cat([xs[:1], xs[1:] + sea.D_fc2(h)], dim=0)
    x = x + xs
    xn = blk.ln_2(x)
    return x + blk.mlp(xn) + _timm_drop_path(blk.scale * blk.MLP_Adapter(xn), p, training)


def _release_forward(m, x, rate, training):
    "The release's ViT_CLIP forward (stem, blocks at torch.linspace(0, rate, L) drop-path rates, ln_post, mean, fc)."
    v = m.visual
    B, C, T, H, W = x.shape
    f = v.conv1(x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W))
    d = f.shape[1]
    f = f.reshape(B * T, d, -1).permute(0, 2, 1)
    f = torch.cat([v.class_embedding.expand(B * T, 1, d), f], dim=1) + v.positional_embedding
    n = f.shape[1]
    f = (f.view(B, T, n, d) + m.temporal_embedding.weight.view(1, T, 1, d)).view(B * T, n, d)
    z = v.ln_pre(f).permute(1, 0, 2)                                          # (n, b*t, d)
    blocks = v.transformer.resblocks
    for blk, p in zip(blocks, [r.item() for r in torch.linspace(0, rate, len(blocks))]):
        z = _release_block(blk, z, T, p, training)
    return m.head.fc(v.ln_post(z[0]).view(B, T, d).mean(1))


def test_official_train_mode_drop_path_matches_the_release():
    "Same seed, same draws: our official model in train mode equals the re-implemented release bit for bit (to 1e-6)."
    torch.manual_seed(0)
    m = randomise(tiny('official', T=2, image_size=56, drop_path_rate=0.5, dropout=0.)).train()
    x = torch.randn(3, 3, 2, 56, 56)
    outs = []
    for seed in (1, 2):
        with torch.no_grad():
            torch.manual_seed(seed); ours = m(x)
            torch.manual_seed(seed); ref = _release_forward(m, x, 0.5, training=True)
        assert (ours - ref).abs().max().item() < 1e-6, (seed, (ours - ref).abs().max().item())
        outs.append(ours)
    with torch.no_grad():
        ev = m.eval()(x); ref_ev = _release_forward(m, x, 0.5, training=False)
    assert (ev - ref_ev).abs().max().item() < 1e-6
    assert (outs[0] - outs[1]).abs().max() > 1e-3 and (outs[0] - ev).abs().max() > 1e-3   # the masks did drop something


def test_drop_path_tokens_is_timm_on_the_release_layout():
    "One keep/drop per token position, shared by all samples and frames: timm's DropPath on (n, b*t, d), bit for bit."
    from steanet.model import drop_path_tokens
    x = torch.randn(12, 197, 8)                                       # (b*t, n, d), batch-first as in our blocks
    torch.manual_seed(3); ours = drop_path_tokens(x, 0.3, True)
    torch.manual_seed(3); ref = _timm_drop_path(x.transpose(0, 1).contiguous(), 0.3, True).transpose(0, 1)
    assert torch.equal(ours, ref)
    timm = pytest.importorskip('timm')
    torch.manual_seed(3); ref2 = timm.layers.DropPath(0.3).train()(x.transpose(0, 1).contiguous()).transpose(0, 1)
    assert torch.equal(ours, ref2)
    kept = ours.abs().sum(-1) > 0                                      # (b*t, n)
    assert (kept == kept[:1]).all() and 0 < kept[0].sum() < 197
    # the steanet variant keeps its per-sample rule
    from steanet.model import drop_path
    y = rearrange(drop_path(torch.ones(8 * 2, 5, 3), 0.5, True, 8), '(b t) n d -> b (t n d)', b=8)
    assert all((r == 0).all() or (r == 2).all() for r in y)


# ---------------------------------------------------------------- release checkpoints as mmcv saves them; nothing runs
def _mmcv_checkpoint(sd, optimizer=True):
    import numpy as np
    meta = {'mmcv_version': '1.3.16', 'time': 'Thu Mar 10 12:00:00 2022', 'env_info': 'sys.platform: linux\nPython: 3.8.12',
            'config': "model = dict(type='Recognizer3D', backbone=dict(type='ViT_CLIP', drop_path_rate=0.2))",
            'seed': np.int64(42), 'exp_name': 'vitclip_base_VE8.py', 'mmaction_version': '0.24.1+abc', 'epoch': 100,
            'iter': 2300, 'CLASSES': None,
            'hook_msgs': {'last_ckpt': 'work_dirs/vitclip_base_VE8/epoch_100.pth', 'best_score': np.float64(0.5231),
                          'best_ckpt': 'work_dirs/best_top1_acc_epoch_95.pth', 'best_epoch': np.int32(95),
                          'lr': np.float32(2e-5), 'ok': np.bool_(True)}}
    ck = {'meta': meta, 'state_dict': sd}
    if optimizer:
        ck['optimizer'] = {'state': {0: {'step': torch.tensor(2300.), 'exp_avg': torch.zeros(3), 'exp_avg_sq': torch.zeros(3)}},
                           'param_groups': [{'lr': 0.0, 'betas': (0.9, 0.999), 'eps': 1e-8, 'weight_decay': 0.05,
                                             'amsgrad': False, 'initial_lr': 2e-5, 'params': [0]}]}
    return ck


def test_official_fixture_as_mmcv_saves_it(fixtures_dir, tmp_path):
    "numpy-scalar meta (numpy 2 and numpy 1.x names), optimizer or not, zip or legacy format: loads, logits to 1e-5."
    from safetensors.torch import load_file
    from steanet.model import convert_checkpoint, read_weights
    d = fixtures_dir / 'official_reference'
    sd, ref = load_file(d / 'official_tiny_checkpoint.safetensors'), load_file(d / 'official_tiny_io.safetensors')
    files = []
    for opt in (True, False):
        torch.save(_mmcv_checkpoint(sd, opt), tmp_path / f'epoch_100_{opt}.pth'); files.append(tmp_path / f'epoch_100_{opt}.pth')
    legacy = tmp_path / 'legacy.pth'                                    # torch's old format, numpy 1.x global names
    torch.save(_mmcv_checkpoint(sd), legacy, _use_new_zipfile_serialization=False)
    raw = legacy.read_bytes()
    assert b'numpy._core.multiarray\nscalar' in raw
    legacy.write_bytes(raw.replace(b'numpy._core.multiarray\nscalar', b'numpy.core.multiarray\nscalar')); files.append(legacy)
    for p in files:
        m = load_official_checkpoint(p, heads=2)
        _check_fixture(m, ref)
        assert m.variant == 'official' and m.meta['sha256'] == file_sha256(p)
    assert float(read_weights(legacy)['meta']['hook_msgs']['best_score']) == 0.5231
    out = convert_checkpoint(files[0], tmp_path / 'release.safetensors')          # the safe form, once and for all
    _check_fixture(load_official_checkpoint(out, heads=2), ref)
    from safetensors import safe_open
    with safe_open(str(out), 'pt') as f:
        md = f.metadata(); keys = set(f.keys())
    assert keys == set(sd) and json.loads(md['meta'])['hook_msgs']['best_score'] == 0.5231
    assert md['source_sha256'] == file_sha256(files[0])
    with pytest.raises(BackboneError, match='exists'):
        convert_checkpoint(files[0], out)                                           # never overwrites
    from steanet.cli import main                                                    # the command does the same
    assert main(['convert-checkpoint', str(legacy), str(tmp_path / 'cli.safetensors'), '--json']) == 0
    _check_fixture(load_official_checkpoint(tmp_path / 'cli.safetensors', heads=2), ref)
    assert main(['convert-checkpoint', str(legacy), str(tmp_path / 'cli.safetensors'), '--json']) == 1   # kept


def _evil(marker):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))
    return Evil()


def test_a_pickle_that_runs_a_command_never_runs_on_any_path(tmp_path, monkeypatch):
    import pickle
    from steanet.config import SteanetError
    from steanet.model import convert_checkpoint, read_weights
    marker = tmp_path / 'marker'
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')          # even with torch told to load unsafely by default
    clip = open_clip.create_model('steanet-tiny').state_dict()
    paths = []
    p = tmp_path / 'zip.pth'; torch.save({'state_dict': clip, 'meta': {'x': _evil(marker)}}, p); paths.append(p)
    p = tmp_path / 'legacy.pth'; torch.save({'state_dict': clip, 'x': _evil(marker)}, p, _use_new_zipfile_serialization=False); paths.append(p)
    p = tmp_path / 'plain.pt'; p.write_bytes(pickle.dumps({'x': _evil(marker)})); paths.append(p)
    loaders = {'read_weights': read_weights, 'load_official_checkpoint': load_official_checkpoint,
               'backbone.pretrained': lambda q: build_model(backbone='steanet-tiny', pretrained=str(q), num_classes=2, num_frames=4),
               'convert_checkpoint': lambda q: convert_checkpoint(q, tmp_path / 'out.safetensors'),
               'config': lambda q: build_model(make_config('demo', [f'backbone.pretrained={q}']))}
    for p in paths:
        for name, load in loaders.items():
            with pytest.raises(SteanetError) as e:
                load(p)
            msg = str(e.value)
            assert '\n' not in msg and 'posix.system' in msg and str(p) in msg, (name, p, msg)
            assert not marker.exists(), (name, p)
    assert not (tmp_path / 'out.safetensors').exists()
    with pytest.raises(BackboneError, match='not one of the data-only globals'):
        convert_checkpoint(paths[0], tmp_path / 'out.safetensors', allow_globals=['posix.system'])
    assert not marker.exists()


def test_other_globals_refused_by_name_and_convertible_when_data_only(fixtures_dir, tmp_path):
    "A numpy array in meta needs numpy's array reconstructor: refused by name, converted with allow_globals."
    import numpy as np
    from safetensors.torch import load_file
    from steanet.model import EXTRA_SAFE_GLOBALS, convert_checkpoint
    d = fixtures_dir / 'official_reference'
    ck = _mmcv_checkpoint(load_file(d / 'official_tiny_checkpoint.safetensors'))
    ck['meta']['hook_msgs']['scores'] = np.arange(3.)
    torch.save(ck, tmp_path / 'arr.pth')
    with pytest.raises(BackboneError) as e:
        load_official_checkpoint(tmp_path / 'arr.pth', heads=2)
    assert 'numpy._core.multiarray._reconstruct' in str(e.value) and 'convert-checkpoint' in str(e.value)
    names = [n for n in EXTRA_SAFE_GLOBALS if n in str(e.value)] + ['numpy.ndarray']
    out = convert_checkpoint(tmp_path / 'arr.pth', tmp_path / 'arr.safetensors', allow_globals=names)
    _check_fixture(load_official_checkpoint(out, heads=2), load_file(d / 'official_tiny_io.safetensors'))


def test_torchscript_and_broken_files_are_one_line_errors(tmp_path):
    from steanet.model import read_weights
    ts = tmp_path / 'openai_style.pt'
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), ts)
    with pytest.raises(BackboneError, match='TorchScript') as e:
        build_model(backbone='steanet-tiny', pretrained=str(ts), num_classes=2)
    assert '\n' not in str(e.value)
    good = tmp_path / 'clip.pt'; torch.save(open_clip.create_model('steanet-tiny').state_dict(), good)
    cut = tmp_path / 'cut.pt'; cut.write_bytes(good.read_bytes()[:5000])
    bad_st = tmp_path / 'cut.safetensors'; bad_st.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    for p, what in ((cut, 'cannot read it'), (bad_st, 'safetensors'), (tmp_path / 'none.pth', 'not found')):
        with pytest.raises(BackboneError, match=what) as e:
            read_weights(p)
        assert '\n' not in str(e.value)
        with pytest.raises(BackboneError):
            load_official_checkpoint(p)


def test_model_errors_are_steanet_errors():
    from steanet.config import SteanetError
    from steanet.model import WeightsFileError
    assert issubclass(BackboneError, SteanetError) and issubclass(BackboneError, ValueError)
    assert issubclass(RandomBackboneError, SteanetError) and issubclass(RandomBackboneError, RuntimeError)
    assert issubclass(WeightsFileError, BackboneError)


def test_a_pickle_that_runs_a_command_never_runs_from_the_command_line(tmp_path, monkeypatch, capsys):
    """Every path the CLI accepts: backbone.pretrained (train), --checkpoint and --backbone-weights of eval / predict /
    explain, a checkpoint whose backbone reference is the file, --resume's resume.pt, convert-checkpoint. Exit 1, one
    line, and the marker file never appears."""
    import pickle
    from steanet.checkpoint import checkpoint_meta, save_checkpoint
    from steanet.cli import main
    marker = tmp_path / 'marker'
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    clip = open_clip.create_model('steanet-tiny').state_dict()
    evil = tmp_path / 'evil.pth'; torch.save({'state_dict': clip, 'meta': {'x': _evil(marker)}}, evil)
    plain = tmp_path / 'evil.pt'; plain.write_bytes(pickle.dumps({'x': _evil(marker)}))
    # a real checkpoint of the tiny demo model, and a copy whose backbone reference is the evil file
    cfg = make_config('demo', ['backbone.allow_random_backbone=true', 'data.num_frames=4'])
    torch.manual_seed(cfg.train.seed); m = build_model(cfg, num_classes=8)
    good = tmp_path / 'good'; good.mkdir(); save_checkpoint(good / 'best', m, checkpoint_meta(cfg, m, [str(i) for i in range(8)]))
    bad = tmp_path / 'bad'; bad.mkdir()
    meta = json.loads((good / 'best.json').read_text()); meta['config']['backbone']['pretrained'] = str(evil)
    (bad / 'best.safetensors').write_bytes((good / 'best.safetensors').read_bytes())
    (bad / 'best.json').write_text(json.dumps(meta))
    run = tmp_path / 'run'; run.mkdir(); (run / 'resume.pt').write_bytes(evil.read_bytes())
    vid = tmp_path / 'v.mp4'; vid.write_bytes(b'')
    for sc in ('train/A', 'train/B', 'test/A', 'test/B'):
        (tmp_path / 'videos' / sc).mkdir(parents=True); (tmp_path / 'videos' / sc / 'x.mp4').touch()
    calls = [['train', '--config', 'folder', '--set', f'data.root={tmp_path / "videos"}', 'backbone.name=steanet-tiny',
              'data.input_size=32', f'backbone.pretrained={evil}', 'tracking.enabled=false', f'train.out_dir={tmp_path / "runs"}'],
             ['train', '--resume', str(run)],
             ['convert-checkpoint', str(evil), str(tmp_path / 'out.safetensors')],
             ['convert-checkpoint', str(plain), str(tmp_path / 'out.safetensors')]]
    for cmd, extra in (('eval', []), ('predict', [str(vid)]), ('explain', [str(vid), '--out', str(tmp_path / 'ex')])):
        calls += [[cmd, '--checkpoint', str(p), *extra] for p in (evil, plain, bad)]
        calls.append([cmd, '--checkpoint', str(good), '--backbone-weights', str(evil), '--allow-backbone-mismatch', *extra])
    for argv in calls:
        code = main([*argv, '--json'])
        out = capsys.readouterr()
        assert code == 1, (argv, out.out[-2000:], out.err[-2000:])
        err = json.loads(out.out.strip().splitlines()[-1])['error']
        assert '\n' not in err, (argv, err)
        assert not marker.exists(), argv
        assert 'posix.system' in err or ('not a steanet checkpoint' in err and 'safetensors' in err) \
            or 'not a readable safetensors file' in err, (argv, err)
    assert not (tmp_path / 'out.safetensors').exists()
