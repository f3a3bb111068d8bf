"""steanet.config: the release recipes field by field, redaction, odd YAML types, and a property-based suite.

The property suite (hypothesis) throws YAML files, JSON files and `--set` values at the config layer — random
structures of real and made-up keys, YAML anchors/aliases/merge keys, tags the safe loader refuses, huge and
malformed numbers (1e309, .nan, 0x10, 1_000, 5000-digit integers), very long strings, deep nesting — and asserts
that each input either becomes a valid config (which then survives a save/load round trip) or raises `ConfigError`
with a one-line message, never any other exception. Examples are bounded and derandomised (the same cases every run,
no example database written), so the suite takes seconds.
"""
import copy
import json
import math
from collections import Counter
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from steanet.config import (ADAPTER_NAMES, ConfigError, ExperimentConfig, FORMATS, EXPLAIN_METHODS, VARIANTS, SteanetError,
                            apply_overrides, compare_to_release, config_from_dict, config_to_dict, diff_configs,
                            flatten_config, get_preset, list_presets, load_config, make_config, redact, redact_tree,
                            redacted_dict, save_config, show_config, validate_config)

CASES = Counter()                 # inputs tried per property (printed by test_zz_report with -s)
PROPERTY = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------- the release's recipes, value by value
RELEASE = {   # issue 11: configs/recognition/vit/vitclip_base_VE8.py (EK6: the same but 6 classes)
    'backbone.name': 'ViT-B-16', 'backbone.pretrained': 'openai', 'backbone.image_size': 224, 'data.num_frames': 16,
    'backbone.drop_path_rate': 0.2, 'adapters.adapter_scale': 0.5, 'train.dropout': 0.5, 'adapters.variant': 'official',
    'adapters.s_ratio': 0.25, 'adapters.t_ratio': 0.25, 'adapters.mlp_ratio': 0.25, 'adapters.tea_ratio': 0.25,
    'adapters.sea_ratio': 0.25, 'adapters.tea_kernel': 1, 'adapters.sea_kernel': 1,
    # train pipeline: dense 16 x 16, one clip; short side 256; RandomResizedCrop area 0.08-1, aspect 3/4-4/3; 224; flip
    'data.sampling': 'dense', 'data.frame_interval': 16, 'data.short_side': 256, 'data.scale_range': [0.08, 1.0],
    'data.aspect_range': [3 / 4, 4 / 3], 'data.input_size': 224, 'data.hflip': True,
    # val: the same sampling in test mode (one clip), short side 256, centre crop 224
    'data.val_num_clips': 1, 'data.test_crops': 1,
    # test: 10 clips, short side 224, centre crop 224 (probabilities averaged over views: the evaluator's rule)
    'data.num_clips': 10, 'data.test_short_side': 224,
    # 4 videos per GPU x 8 GPUs; AdamW 2e-5 (0.9, 0.999), wd 0.05 with the release's no-decay set
    'train.batch_size': 4, 'train.global_batch': 32, 'train.grad_accum': 1, 'train.lr': 2e-5, 'train.betas': [0.9, 0.999],
    'train.weight_decay': 0.05, 'train.decay_rule': 'release',
    # cosine to 0 after 2.5 linear warm-up epochs, 100 epochs, no clipping, eval every epoch, fp16, last epoch kept
    'train.min_lr': 0.0, 'train.warmup_epochs': 2.5, 'train.epochs': 100, 'train.clip_grad': None, 'train.eval_every': 1,
    'train.amp': 'fp16', 'train.selection': 'last', 'data.val_fraction': 0.0, 'train.monitor_test': False,
}


@pytest.mark.parametrize('name,classes,dataset', [('ve8-release', 8, 've8'), ('ek6-release', 6, 'ek6')])
def test_release_presets_match_the_release_field_by_field(name, classes, dataset):
    flat = flatten_config(make_config(name, [f'data.root=/data/{dataset}', f'data.annotations=/data/{dataset}/splits']))
    for k, v in RELEASE.items():
        assert flat[k] == v, (k, flat[k], v)
    assert (flat['data.num_classes'], flat['data.dataset']) == (classes, dataset)


# the stand-in: a tiny backbone that `official` accepts (56 px / patch 4 = 197 tokens), the same short-side ratio, one epoch
STANDIN = {'backbone.name': 'steanet-tiny', 'backbone.pretrained': None, 'backbone.allow_random_backbone': True,
           'backbone.image_size': 56, 'data.input_size': 56, 'data.short_side': 64, 'data.test_short_side': 56,
           'train.epochs': 1, 'train.device': 'cpu', 'data.num_workers': 0, 'data.decoder': 'pyav', 'tracking.enabled': False}


def split_file_dataset(tmp_path) -> tuple:
    "A VE-8-shaped split-file dataset (classInd.txt, trainlist01.txt, testlist01.txt) of 8 + 2 synthetic videos, 8 classes."
    from steanet.synthetic import make_synthetic_dataset
    from steanet.data import load_records
    syn = make_synthetic_dataset(tmp_path / 'syn', n_per_class=1, val_per_class=1, test_per_class=1, frames=8, seed=7)
    dc = make_config('demo', [f'data.root={syn}']).data
    ann = tmp_path / 'splits'; ann.mkdir()
    (tr, classes), (te, _) = load_records(dc, 'train'), load_records(dc, 'test')
    tr, te = tr[:8], te[:2]                     # one training video per class: every class can be learnt
    (ann / 'classInd.txt').write_text(''.join(f'{i + 1} {c}\n' for i, c in enumerate(classes)))
    name = lambda r: f'{r.class_name}/{Path(r.path).stem}'
    (ann / 'trainlist01.txt').write_text(''.join(f'{name(r)} {r.label + 1}\n' for r in tr))
    (ann / 'testlist01.txt').write_text(''.join(f'{name(r)}\n' for r in te))
    return syn / 'videos', ann


def test_train_ve8_release_runs_the_release_protocol(tmp_path):
    "`steanet train --config ve8-release --set data.root=... data.annotations=...` on a tiny stand-in."
    import subprocess, sys
    from steanet.data import build_dataset
    root, ann = split_file_dataset(tmp_path)
    text = lambda v: 'none' if v is None else str(v).lower() if isinstance(v, bool) else v
    sets = [f'data.root={root}', f'data.annotations={ann}', *(f'{k}={text(v)}' for k, v in STANDIN.items())]
    code = 'import sys; from steanet.cli import main; sys.exit(main(sys.argv[1:]))'
    r = subprocess.run([sys.executable, '-c', code, 'train', '--config', 've8-release', '--set', *sets, '--run-dir',
                        str(tmp_path / 'run'), '--json'], capture_output=True, text=True, timeout=600,
                       env={**__import__('os').environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    # the run's resolved config is the release's, field by field (but for the stand-in's own keys)
    cfg = load_config(tmp_path / 'run' / 'config.yaml'); flat = flatten_config(cfg)
    for k, v in RELEASE.items():
        assert flat[k] == (STANDIN[k] if k in STANDIN else v), (k, flat[k], v)
    # and it ran that protocol: the last epoch kept (no validation split), 32 clips per step from 4 x 8 micro-batches,
    # fp16 in fp32 on a CPU, 1 validation view at short side 64, 10 test views at 56
    assert res['selection'] == {'selection': 'last', 'val_source': 'none', 'val_param': ''}
    assert res['metrics']['best_epoch'] == 1 and 0 <= res['metrics']['test/top1'] <= 1
    assert 'train.amp=fp16 on cpu: training in fp32' in r.stderr
    from steanet.train import accum_steps
    assert accum_steps(cfg.train, 1) == 8
    norm = dict(mean=(0.5,) * 3, std=(0.25,) * 3)
    te = build_dataset(cfg, 'test', train=False, **norm)
    va = build_dataset(cfg, 'val', records=te.records, train=False, **norm)
    assert (te.num_views, te.short_side, va.num_views, va.short_side) == (10, 56, 1, 64)
    assert te[0]['video'].shape == (10, 3, 16, 56, 56)
    meta = json.loads((tmp_path / 'run' / 'best.json').read_text())
    assert meta['selection']['selection'] == 'last' and meta['variant'] == 'official'


def test_every_difference_from_the_release_is_explained():
    rows = compare_to_release('ve8', 've8-release')
    assert rows and all(r['why'] for r in rows)
    assert [r['setting'] for r in rows] == [r['setting'] for r in compare_to_release('ek6', 'ek6-release')]
    assert diff_configs('ve8', 've8') == []


def test_readme_table_is_the_generated_one():
    "README's ve8 vs ve8-release table is `markdown_table(compare_to_release())`, so it cannot drift from the presets."
    from steanet.config import markdown_table
    root = Path(__file__).resolve().parents[1]
    table = markdown_table(compare_to_release())
    nb = json.loads((root / 'nbs' / 'index.ipynb').read_text())
    assert any(table in ''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown'), \
        'nbs/index.ipynb: paste markdown_table(compare_to_release()) into "Our recipe and the release\'s", then make readme'
    assert table in (root / 'README.md').read_text()


def test_canonical_choices_match_the_modules():
    "config may not import the heavy modules; their lists must still agree."
    from steanet.data import FORMATS as data_formats
    from steanet.explain import METHODS
    from steanet.model import VARIANTS as model_variants
    from steanet.tune import ADAPTER_KEYS
    assert tuple(FORMATS) == tuple(data_formats) and set(EXPLAIN_METHODS) == set(METHODS)
    assert tuple(VARIANTS) == tuple(model_variants) and tuple(ADAPTER_NAMES) == tuple(ADAPTER_KEYS)


def test_presets_listed_with_descriptions_and_valid():
    names = [n for n, _ in list_presets()]
    assert {'ve8', 'ek6', 've8-release', 'ek6-release', 'folder', 'demo'} <= set(names)
    for n, desc in list_presets():
        assert desc and '\n' not in desc
        validate_config(get_preset(n))
    assert 'data.root' in str(pytest.raises(ConfigError, validate_config, get_preset('folder'), run=True).value)


def test_new_fields_keep_existing_presets_as_they_were():
    "Every field added in this wave defaults to what the code did before it existed."
    d = ExperimentConfig()
    assert (d.data.val_num_clips, d.data.test_short_side, d.data.aspect_range, d.data.partial_videos) == (None, None, (0.75, 4 / 3), 'use')
    assert (d.train.betas, d.train.decay_rule, d.train.global_batch, d.train.selection) == ((0.9, 0.999), 'weights', None, 'auto')
    assert (d.train.monitor_test, d.train.max_steps, d.train.limit_batches) == (False, None, None)


# ---------------------------------------------------------------- redaction
SECRETS = ['postgresql+psycopg://u:SECRET@host:5432/db', 'http://u:SECRET@host', 'https://user:SECRET@mlflow.example:443/x',
           'mysql://root:SECRET@127.0.0.1:3306/optuna', 'mysql+pymysql://u:SECRET@h/db?charset=utf8mb4',
           'postgresql://host/db?password=SECRET', 'postgresql://h/db?sslmode=require&password=SECRET&x=1',
           'redis://:SECRET@localhost:6379/0', 'host=h port=5432 password=SECRET dbname=d', 'PGPASSWORD=SECRET',
           'postgresql://u:p@SECRET@host/db', "error: could not connect to 'postgresql://u:SECRET@h:5/d' (timeout)",
           'api_key=SECRET', 'https://h/api?access_token=SECRET', 'client_secret=SECRET;next=1',
           # issue 26: passwords holding `#` or `/`, a token-only userinfo, a query password, JSON, several URLs in a line
           'postgresql://u:p#SECRET@h/db', 'postgresql://u:a/SECRET@h/db', 'http://u:x/y#SECRET?z@h:5000/a',
           'http://SECRET@host', 'https://SECRET@github.com/org/x.git', 'http://u@host/db'.replace('u@', 'SECRET@'),
           'sqlite:////tmp/o.db?password=SECRET', '{"password": "SECRET"}', "password='two SECRET words'",
           'a=http://u:SECRET@h,b=https://v:SECRET@k', 'View run r at: http://u:SECRET@127.0.0.1:5000/#/experiments/1/runs/2']
LOOKALIKES = ['/data/me@home/videos:2024/a.mp4', 'user@host:videos/a.mp4', 'git@github.com:org/repo.git',
              'sqlite:////abs/path/mlruns/mlflow.db', 'sqlite:///mlruns/optuna.db', 'file:///a:b@c', 'http://host/a@b',
              'C:\\videos\\clip@2x.mp4', 'journal:mlruns/optuna.journal', 'max_tokens=5', 'n_passwords=3',
              'train.lr=3e-4', 'ratio 3:4 @ 25fps', 'a@b:c@d', 'mailto:someone@example.org', 'postgresql://u@host:5432/db',
              'mysql+pymysql://root@h/db', 'the password: see ~/.pgpass']


@pytest.mark.parametrize('s', SECRETS)
def test_redact_masks_secrets(s):
    r = redact(s)
    assert 'SECRET' not in r and '***' in r and redact(r) == r
    assert 'SECRET' not in str(SteanetError(f'failed on {s}')) and 'SECRET' not in str(ConfigError(s))


@pytest.mark.parametrize('s', LOOKALIKES)
def test_redact_leaves_lookalikes_alone(s):
    assert redact(s) == s


# property-based: a URL with any password (or a token-only userinfo) inside any text is masked, idempotently
_SCHEMES = st.sampled_from(['http', 'https', 'postgresql', 'postgresql+psycopg', 'mysql+pymysql', 'redis', 's3', 'sqlite'])
_USER = st.text(st.characters(blacklist_characters=' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0:/?#@', blacklist_categories=('Cs', 'Z', 'Cc')), max_size=8)
_PASSWORD = st.text(st.characters(blacklist_categories=('Cs', 'Z', 'Cc')), max_size=12).map(lambda p: p[:6] + 'SECRET' + p[6:])
_HOST = st.from_regex(r'[a-z][a-z0-9.\-]{0,10}(:[0-9]{1,5})?(/[a-z0-9_.]{0,8})?(\?[a-z]{1,5}=[a-z0-9]{1,5})?', fullmatch=True)
_AROUND = st.sampled_from(['', 'cannot reach ', "storage '", 'uri=', '(', '🏃 View run r at: '])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=_SCHEMES, user=_USER, password=_PASSWORD, host=_HOST, before=_AROUND, after=st.sampled_from(['', ' (x)', "'", ')', '\n', ' and more']))
def test_redact_masks_any_password_property(scheme, user, password, host, before, after):
    url = f'{scheme}://{user}:{password}@{host}'
    for text in (before + url + after, url):
        r = redact(text)
        assert 'SECRET' not in r and redact(r) == r, (text, r)
    if not {'@', '#', '/', '?'} & set(password) and scheme not in ('sqlite',):
        assert redact(url).endswith('@' + host)                                   # the host stays readable


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(['http', 'https', 's3', 'git+https']), token=_PASSWORD.filter(lambda p: ':' not in p and not set(p) & set(' \t\n\r\x0b\x0c/?#')),
       host=_HOST)
def test_redact_masks_token_only_userinfo_property(scheme, token, host):
    r = redact(f'push to {scheme}://{token}@{host} now')
    assert 'SECRET' not in r and f'://***@{host} now' in r and redact(r) == r


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(blacklist_characters='@=', blacklist_categories=('Cs',)), max_size=60))
def test_redact_leaves_text_without_credentials_alone_property(text):
    assert redact(text) == text                    # no `@`, no `=`: nothing to mask, nothing changed


def test_redaction_everywhere_a_config_is_logged_or_written(tmp_path):
    url = 'postgresql+psycopg://u:SECRET@db:5432/optuna'
    c = make_config('demo', [f'tune.storage={url}', 'data.root=s3://key:SECRET@bucket/videos'])
    assert c.tune.storage == url                                          # memory keeps it: the run can connect
    for text in (show_config(c), json.dumps(redacted_dict(c)), str(flatten_config(c)),
                 save_config(c, tmp_path / 'c.yaml').read_text(), save_config(c, tmp_path / 'c.json').read_text()):
        assert 'SECRET' not in text and 'u:***@db' in text
    assert redact_tree({'meta': [url, (url,)]}) == {'meta': ['postgresql+psycopg://u:***@db:5432/optuna', ('postgresql+psycopg://u:***@db:5432/optuna',)]}
    with pytest.raises(ConfigError) as e:                                 # a bad value's message holds it masked
        make_config('demo', [f'tune.storage={url} trailing'])
    assert 'SECRET' not in str(e.value) and '***' in str(e.value)
    long = 'postgresql://u:' + 'S' * 200 + '@h/db'                           # masked before a long value is cut short
    with pytest.raises(ConfigError) as e:
        make_config('demo', [f'tune.storage={long} x'])
    assert 'SSSS' not in str(e.value)


# ---------------------------------------------------------------- what yaml.safe_load can build
@pytest.mark.parametrize('body', ['data:\n  dataset: 2024-01-01\n', 'data:\n  root: !!binary aGVsbG8=\n',
                                  'train:\n  lr: 2001-12-14t21:59:43.10-05:00\n', 'tune:\n  ratios: !!set {0.1, 0.2}\n',
                                  'train:\n  amp: off\n', 'explain:\n  methods: [!!binary aWc=]\n',
                                  'train: !!omap [{lr: 0.1}]\n', '- 1\n- 2\n', '42\n', 'false\n', '"text"\n',
                                  'preset: [demo]\n', 'preset: nope\n', '---\na: 1\n---\nb: 2\n'])
def test_odd_yaml_values_are_config_errors(tmp_path, body):
    p = tmp_path / 'c.yaml'; p.write_text(body)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and '\n' not in str(e.value)


def test_yaml_that_would_run_code_never_does(tmp_path):
    marker = tmp_path / 'marker'
    p = tmp_path / 'evil.yaml'
    p.write_text(f'train: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match='evil.yaml'):
        load_config(p)
    assert not marker.exists()


@pytest.mark.parametrize('ext', ['yaml', 'json'])
def test_absurd_nesting_is_a_config_error(tmp_path, ext):
    p = tmp_path / f'deep.{ext}'
    p.write_text('{"backbone": {"name": ' + '[' * 3000 + '1' + ']' * 3000 + '}}')
    with pytest.raises(ConfigError, match='deep'):
        load_config(p)


def test_files_that_are_not_configs(tmp_path):
    (tmp_path / 'bin.yaml').write_bytes(b'\xff\xfe\x00garbage')
    (tmp_path / 'dir.yaml').mkdir()
    for p, msg in ((tmp_path / 'bin.yaml', 'UTF-8'), (tmp_path / 'dir.yaml', 'folder'), (tmp_path / 'none.yaml', 'not found')):
        with pytest.raises(ConfigError, match=msg):
            load_config(p)
    (tmp_path / 'empty.yaml').write_text('')
    assert load_config(tmp_path / 'empty.yaml') == ExperimentConfig()


# ---------------------------------------------------------------- property-based: anything in, valid config or ConfigError out
def _sections() -> dict:
    c = ExperimentConfig()
    return {f.name: [g.name for g in fields(getattr(c, f.name))] for f in fields(c) if is_dataclass(getattr(c, f.name))}


SECTIONS = _sections()
DOTTED = [f'{s}.{k}' for s, ks in SECTIONS.items() for k in ks]
RAW = ['0', '1', '-1', '3', '8', '16', '224', '0.5', '1.5', '1e-4', '3e-4', '1e309', '-1e309', '.inf', '-.inf', '.nan',
       'nan', 'inf', '0x10', '0o17', '017', '1_000', '1:30', '2024-01-01', '2001-12-14t21:59:43.10-05:00', 'off', 'on',
       'yes', 'no', 'true', 'False', 'none', 'null', '~', '', "''", '""', '[]', '{}', '[0.5, 1]', '[1, 3, 5]', '[1, 2, 3]',
       '[0.1, 0.9]', '[0.9, 0.1]', 'accuracy,params', 'ig,tokens', 'median:n_startup_trials=5', 'cuda:0', 'gpu',
       'steanet', 'official', 'dense', 'fp16', '!!binary aGVsbG8=', '!!set {a, b}', '&a [1, *a]', '*undefined',
       '&x 5', '[[[[[[[[1]]]]]]]]', '{a: {b: {c: 1}}}', '9' * 5000, 'x' * 5000, '-' * 3, '"\\u0000"', '"a\\nb"',
       'postgresql://u:SECRET@h/db', 'sqlite:///mlruns/x.db', '/tmp/videos', 'a b c', '@', '%', '`', '|', '>']
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**40, max_value=10**40),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                   st.sampled_from(['x' * 5000, 'steanet', 'official', 'folder', 'dense', 'ig', 'accuracy', 'off', 'auto']))
VALUES = st.recursive(LEAVES, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                      max_leaves=12)


def _key_values(section_keys):
    known = st.sampled_from(section_keys) if section_keys else st.nothing()
    return st.dictionaries(known | st.text(min_size=1, max_size=10), VALUES, max_size=4)


CONFIG_DICTS = st.dictionaries(
    st.sampled_from(list(SECTIONS)) | st.sampled_from(['preset', 'name', 'nope']),
    st.deferred(lambda: st.one_of(_key_values(sum(SECTIONS.values(), [])), VALUES, st.sampled_from(['demo', 've8', 'x']))),
    max_size=5)


def _outcome(fn, kind):
    "Run one input: a valid config (re-validated and round-tripped) or a one-line ConfigError; anything else fails."
    CASES[kind] += 1
    try:
        cfg = fn()
    except ConfigError as e:
        msg = str(e)
        assert msg and '\n' not in msg, msg
        CASES[f'{kind}:error'] += 1
        return 'error'
    assert isinstance(cfg, ExperimentConfig)
    validate_config(copy.deepcopy(cfg))
    assert config_from_dict(config_to_dict(cfg)) == cfg
    CASES[f'{kind}:valid'] += 1
    return 'valid'


@PROPERTY
@given(d=CONFIG_DICTS, fmt=st.sampled_from(['yaml', 'json', 'yaml-flow']))
def test_property_config_files(tmp_path_factory, d, fmt):
    p = tmp_path_factory.mktemp('c') / f'c.{"json" if fmt == "json" else "yaml"}'
    try:
        text = json.dumps(d) if fmt == 'json' else yaml.safe_dump(d, default_flow_style=(fmt == 'yaml-flow'))
    except (ValueError, OverflowError, yaml.YAMLError):
        return
    p.write_text(text, encoding='utf-8')
    _outcome(lambda: load_config(p), 'files')


YAML_TEMPLATES = [
    '{sec}:\n  {key}: {raw}\n',
    'base: &b\n  {key}: {raw}\n{sec}:\n  <<: *b\n',
    '{sec}: &s\n  {key}: {raw}\n',
    'a: &a [{raw}, {raw}]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\n{sec}:\n  {key}: [*c, *c]\n',   # nested aliases
    'preset: {preset}\n{sec}:\n  {key}: {raw}\n',
    '{sec}: {{{key}: {raw}}}\n',
    '{sec}:\n  {key}: {deep}\n',
    '{sec}: [{raw}]\n',
    '{raw}\n',
    '{sec}:\n  {key}:\n    - {raw}\n    - {raw}\n',
]


@PROPERTY
@given(t=st.sampled_from(YAML_TEMPLATES), key=st.sampled_from(DOTTED + ['train.nope', 'nope.x']), raw=st.sampled_from(RAW),
       preset=st.sampled_from(['demo', 've8-release', 'folder', 'nope', '[demo]', '']), depth=st.sampled_from([1, 2, 20]))
def test_property_yaml_text(tmp_path_factory, t, key, raw, preset, depth):
    sec, k = key.split('.', 1)
    p = tmp_path_factory.mktemp('y') / 'c.yaml'
    p.write_text(t.format(sec=sec, key=k, raw=raw, preset=preset, deep='[' * depth + '1' + ']' * depth), encoding='utf-8')
    _outcome(lambda: load_config(p), 'yaml-text')


@PROPERTY
@given(sets=st.lists(st.tuples(st.sampled_from(DOTTED + ['train', 'train.', '.lr', 'nope.x', 'train.lr.x']),
                               st.sampled_from(RAW) | st.text(max_size=30)), min_size=1, max_size=4),
       source=st.sampled_from(['ve8', 've8-release', 'folder', 'demo']))
def test_property_set_values(sets, source):
    _outcome(lambda: make_config(source, [f'{k}={v}' for k, v in sets]), 'set')


@PROPERTY
@given(raw=st.sampled_from(RAW) | st.text(max_size=40))
def test_property_set_without_equals_or_not_a_string(raw):
    _outcome(lambda: apply_overrides(get_preset('demo'), [raw.replace('=', '')]), 'set-malformed')


def test_zz_report(capsys):
    "How many inputs the property tests tried (run with -s to see it)."
    with capsys.disabled():
        total = sum(v for k, v in CASES.items() if ':' not in k)
        print(f'\nconfig property cases: {dict(sorted(CASES.items()))} total {total}')
    if CASES:   # the properties ran in this session (not when this test is run alone)
        assert total >= 4 * 50 and all(CASES[f'{k}:valid'] > 0 for k in ('files', 'yaml-text', 'set'))
