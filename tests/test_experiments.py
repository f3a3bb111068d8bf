"""The experiment notebooks hold their results (issue 23): `make experiments` stored each one's outputs; here, without
executing anything, every stored notebook is checked to hold no error and fit 1 MB, and the demo notebook to show
its comparison figure and table."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('nb', sorted((ROOT / 'nbs' / 'experiments').glob('*.ipynb')), ids=lambda p: p.name)
def test_stored_outputs_are_clean_and_small(nb):
    from steanet.experiments import check_stored
    check_stored(nb)


def test_demo_notebook_shows_the_comparison_without_running():
    import nbformat
    from steanet.experiments import check_stored
    nb = ROOT / 'nbs' / 'experiments' / 'demo.ipynb'
    s = check_stored(nb)
    if not any(c.get('outputs') for c in nbformat.read(nb, as_version=4).cells if c.cell_type == 'code'):
        pytest.skip('nbs/experiments/demo.ipynb holds no stored outputs yet: run make experiments NB=nbs/experiments/demo.ipynb')
    assert s['figures'] >= 2 and s['tables'] >= 2, (s, 'run: make experiments NB=nbs/experiments/demo.ipynb')
    cells = nbformat.read(nb, as_version=4).cells
    comparison = next(c for c in cells if c.cell_type == 'code' and 'shuffled top-1' in c.source)
    kinds = {k for o in comparison.outputs for k in o.get('data', {})}
    assert {'image/png', 'text/html'} <= kinds, kinds
    html = next(o['data']['text/html'] for o in comparison.outputs if 'text/html' in o.get('data', {}))
    assert all(v in html for v in ('linear_probe', 'aim', 'steanet')), html[:500]
