"""The lead's acceptance check for issue 14 after `steanet demo` (not a pytest file: it reads the project's own store).

Each of the newest three demo runs has a `model` that `mlflow.pyfunc.load_model` (in a fresh process) predicts a real
fixture video with: 8 probabilities summing to 1, equal to `steanet predict` on the run's folder (also a fresh
process) to 1e-6. Usage, from the project root:

    .venv/bin/python tests/check_demo_models.py [TRACKING_URI] [VIDEO]

TRACKING_URI defaults to the store steanet uses here ($MLFLOW_TRACKING_URI, else sqlite:///<project>/mlruns/mlflow.db);
VIDEO to ../shared/fixtures/videos/demo_340x256_h264.mp4. Exit code 0 when all three match, 1 otherwise.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv) -> int:
    from steanet.testing import check_run_models
    uri = argv[0] if argv else None
    video = argv[1] if len(argv) > 1 else str(ROOT.parent / 'shared' / 'fixtures' / 'videos' / 'demo_340x256_h264.mp4')
    try: res = check_run_models(uri, video, experiment='demo', kind='demo', latest=3)
    except AssertionError as e:
        print(f'FAILED: {e}', file=sys.stderr); return 1
    if len(res) != 3 or any(r['n_classes'] != 8 for r in res):
        print(f'FAILED: expected three demo runs with 8 classes, got {res}', file=sys.stderr); return 1
    print(f'ok: {len(res)} demo runs, each model = steanet predict (max |diff| {max(r["max_abs_diff"] for r in res):.2e})')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
