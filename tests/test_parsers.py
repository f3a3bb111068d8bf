"""The annotation parsers (split lists + classInd.txt, MMAction2 lists, CSV, the release JSON) under a property-based
suite (hypothesis): files made of well-formed lines, near-misses (bad labels, unknown classes, huge and unicode digits,
extra columns, quotes, BOMs, CRLF, blank lines) and plain garbage, including bytes that are not UTF-8. Each file either
parses to records whose labels index the returned classes, or raises the project's `DataError` (one message naming the
file) — never any other exception. Examples are bounded and derandomised (no example database), so the suite takes
seconds; `test_zz_report` prints the number of cases tried (run with -s)."""
import csv, io, json, tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from steanet.data import DataError
from steanet.data.records import load_csv, load_mmaction_list, load_release_json, load_split_lists

CASES = Counter()
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WORD = st.text(st.characters(codec='utf-8', exclude_categories=('Cs',)), min_size=0, max_size=12)
NAME = st.one_of(st.sampled_from(['happy', 'sad', 'anger', 'a b', 'x,y', '"q"', 'ü', '']), WORD)
NUMBER = st.one_of(st.integers(-3, 12).map(str), st.sampled_from(['0x1', '1e3', '²', '٣', '1_0', '9' * 5000, '-0', '+1',
                                                                  '01', ' 2', 'nan']), WORD)
SEP = st.sampled_from([' ', '  ', '\t', ',', ' , '])
EOL = st.sampled_from(['\n', '\r\n', '\r', '\n\n'])


def _text(lines, eol, bom, garbage):
    "A file's bytes from lines (or raw garbage bytes)."
    if garbage is not None: return garbage
    return (('\ufeff' if bom else '') + eol.join(lines)).encode('utf-8', 'surrogatepass')


def _check(result, cases_key):
    "Records whose label indexes the classes (and names its class), with the classes returned alongside."
    CASES[cases_key] += 1
    records, classes = result
    assert isinstance(classes, list)
    for r in records:
        assert 0 <= r.label < len(classes) and r.class_name == classes[r.label], (r, classes)


def _parses_or_data_error(fn, key, where):
    "`fn()` gives records or a `DataError` whose message names the file (its folder `where`)."
    try: out = fn()
    except DataError as e:
        CASES[key + ' (DataError)'] += 1
        assert str(where) in str(e), str(e)
        return
    _check(out, key)


GARBAGE = st.one_of(st.none(), st.none(), st.binary(max_size=200),
                    st.sampled_from([b'\xff\xfe\x00a', b'\x80abc 1', b'\x00\x00', b'a\x00 1']))


VALID_CLASSES = [('1', 'happy'), ('2', 'sad'), ('3', 'anger')]


@PROPERTY
@given(classes=st.one_of(st.just(VALID_CLASSES), st.lists(st.tuples(NUMBER, NAME), max_size=6)), lines=st.lists(st.one_of(
    st.tuples(st.sampled_from(['happy', 'sad', 'anger']), st.just('/'), st.text('abc_-.', min_size=1, max_size=6),
              st.just(' '), st.integers(1, 3).map(str)).map(''.join),
    st.tuples(NAME, st.just('/'), WORD, SEP, NUMBER).map(''.join), WORD, NAME), max_size=8),
       eol=EOL, bom=st.booleans(), garbage=GARBAGE, subset=st.sampled_from(['train', 'test']))
def test_split_lists(classes, lines, eol, bom, garbage, subset):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / 'classInd.txt').write_bytes(_text([f'{i} {n}' for i, n in classes], eol, bom, None))
        (d / f'{subset}list01.txt').write_bytes(_text(lines, eol, bom, garbage))
        _parses_or_data_error(lambda: load_split_lists(d, d, subset, 1, resolve=False), 'split lists', d)


@PROPERTY
@given(lines=st.lists(st.one_of(st.tuples(WORD, SEP, NUMBER).map(''.join), WORD), max_size=8), eol=EOL, bom=st.booleans(),
       garbage=GARBAGE, names=st.one_of(st.none(), st.lists(NAME, max_size=5)), k=st.one_of(st.none(), st.integers(1, 9)))
def test_mmaction_lists(lines, eol, bom, garbage, names, k):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        if names is not None: (d / 'classes.txt').write_bytes(_text(names, eol, bom, None))
        (d / 'train.txt').write_bytes(_text(lines, eol, bom, garbage))
        _parses_or_data_error(lambda: load_mmaction_list(d / 'train.txt', d, 'train', num_classes=k, resolve=False),
                              'mmaction lists', d)


@PROPERTY
@given(rows=st.lists(st.lists(st.one_of(WORD, NUMBER, st.sampled_from(['train', 'test', 'val', 'path'])), max_size=4),
                     max_size=8), header=st.booleans(), garbage=GARBAGE, bom=st.booleans(),
       subset=st.sampled_from(['train', 'test']), k=st.one_of(st.none(), st.integers(1, 9)))
def test_csv(rows, header, garbage, bom, subset, k):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        buf = io.StringIO(); w = csv.writer(buf)
        if header: w.writerow(['path', 'label', 'subset'])
        w.writerows(rows)
        text = buf.getvalue().encode('utf-8', 'surrogatepass') if garbage is None else garbage
        (d / f'{subset}.csv').write_bytes((b'\xef\xbb\xbf' if bom else b'') + text)
        _parses_or_data_error(lambda: load_csv(d, d, subset, num_classes=k, resolve=False), 'csv', d)


JSON_VALUE = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), WORD),
                          lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(WORD, c, max_size=3)),
                          max_leaves=8)
ENTRY = st.one_of(st.fixed_dictionaries({'subset': st.sampled_from(['training', 'validation', 'testing', 'x']),
                                         'annotations': st.one_of(st.fixed_dictionaries({'label': NAME}), JSON_VALUE)}),
                  JSON_VALUE)


@PROPERTY
@given(labels=st.one_of(st.lists(NAME, max_size=5), JSON_VALUE), database=st.one_of(st.dictionaries(WORD, ENTRY, max_size=5), JSON_VALUE),
       whole=st.one_of(st.none(), JSON_VALUE), raw=st.one_of(st.none(), st.none(), WORD, st.binary(max_size=60)),
       subset=st.sampled_from(['train', 'test']))
def test_release_json(labels, database, whole, raw, subset):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / 'split_01.json'
        doc = whole if whole is not None else {'labels': labels, 'database': database}
        if raw is None: f.write_text(json.dumps(doc), encoding='utf-8')
        elif isinstance(raw, str): f.write_bytes(raw.encode('utf-8', 'surrogatepass'))
        else: f.write_bytes(raw)
        _parses_or_data_error(lambda: load_release_json(f, d, subset, 1, resolve=False), 'release json', d)


def test_zz_report():
    "How many inputs each property tried (printed with `pytest -s`); every parser saw both outcomes."
    print('\nannotation parser cases tried:', dict(CASES), 'total', sum(CASES.values()))
    for key in ('split lists', 'mmaction lists', 'csv', 'release json'):
        assert CASES[key] + CASES[key + ' (DataError)'] >= 100, key
        assert CASES[key + ' (DataError)'] > 0, key
