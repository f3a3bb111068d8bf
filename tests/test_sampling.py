"""Dense sampling is MMAction2's `SampleFrames` (0.x, the version the STEANet release runs on): the reference below is
its `_get_train_clips` / `_get_test_clips` / `__call__` (open-mmlab/mmaction2, branch 0.x,
mmaction/datasets/pipelines/loading.py, Apache-2.0) with `np.random` replaced by a seeded generator and the unused
options (`keep_tail_frames`, `twice_sample`, `temporal_jitter`) dropped; ours must give the same indices on a grid of
video lengths around every boundary, in train, val and test mode, for 'loop' and 'repeat_last'."""
import numpy as np
import pytest

from steanet.config import DataConfig, make_config
from steanet.data.clips import dense_indices, sample_indices


class _Rand:
    "np.random's randint on a seeded Generator (MMAction2 draws randint(avg_interval, size=num_clips))."
    def __init__(self, seed): self.g = np.random.default_rng(seed)
    def randint(self, high, size=None): return self.g.integers(high, size=size)


class SampleFrames:
    "MMAction2 0.x SampleFrames, verbatim but for the random source."
    def __init__(self, clip_len, frame_interval=1, num_clips=1, out_of_bound_opt='loop', test_mode=False, rand=None):
        self.clip_len, self.frame_interval, self.num_clips = clip_len, frame_interval, num_clips
        self.out_of_bound_opt, self.test_mode, self.random = out_of_bound_opt, test_mode, rand

    def _get_train_clips(self, num_frames):
        ori_clip_len = self.clip_len * self.frame_interval
        avg_interval = (num_frames - ori_clip_len + 1) // self.num_clips
        if avg_interval > 0:
            base_offsets = np.arange(self.num_clips) * avg_interval
            clip_offsets = base_offsets + self.random.randint(avg_interval, size=self.num_clips)
        elif num_frames > max(self.num_clips, ori_clip_len):
            clip_offsets = np.sort(self.random.randint(num_frames - ori_clip_len + 1, size=self.num_clips))
        elif avg_interval == 0:
            ratio = (num_frames - ori_clip_len + 1.0) / self.num_clips
            clip_offsets = np.around(np.arange(self.num_clips) * ratio)
        else:
            clip_offsets = np.zeros((self.num_clips, ), dtype=np.int64)
        return clip_offsets

    def _get_test_clips(self, num_frames):
        ori_clip_len = self.clip_len * self.frame_interval
        avg_interval = (num_frames - ori_clip_len + 1) / float(self.num_clips)
        if num_frames > ori_clip_len - 1:
            base_offsets = np.arange(self.num_clips) * avg_interval
            clip_offsets = (base_offsets + avg_interval / 2.0).astype(np.int64)
        else:
            clip_offsets = np.zeros((self.num_clips, ), dtype=np.int64)
        return clip_offsets

    def __call__(self, total_frames, start_index=0):
        clip_offsets = self._get_test_clips(total_frames) if self.test_mode else self._get_train_clips(total_frames)
        frame_inds = clip_offsets[:, None] + np.arange(self.clip_len)[None, :] * self.frame_interval
        frame_inds = np.concatenate(frame_inds)
        frame_inds = frame_inds.reshape((-1, self.clip_len))
        if self.out_of_bound_opt == 'loop':
            frame_inds = np.mod(frame_inds, total_frames)
        elif self.out_of_bound_opt == 'repeat_last':
            safe_inds = frame_inds < total_frames
            unsafe_inds = 1 - safe_inds
            last_ind = np.max(safe_inds * frame_inds, axis=1)
            new_inds = (safe_inds * frame_inds + (unsafe_inds.T * last_ind).T)
            frame_inds = new_inds
        return (np.concatenate(frame_inds) + start_index).astype(np.int64)


GRID = sorted({1, 2, 3, 15, 16, 17, 100, 239, 240, 241, 254, 255, 256, 257, 258, 300, 511, 512, 513, 1000, 3210})


@pytest.mark.parametrize('opt,short', [('loop', 'loop'), ('repeat_last', 'pad')])
@pytest.mark.parametrize('n', GRID)
def test_dense_is_mmaction_sample_frames(n, opt, short):
    "16x16 as the release (and 8x4, 4x1): train (seeded, the same draws), val (1 clip) and test (10 clips)."
    for T, I in ((16, 16), (8, 4), (4, 1)):
        for seed in range(3):
            ref = SampleFrames(T, I, 1, opt, test_mode=False, rand=_Rand(seed))(n)
            ours = np.concatenate(dense_indices(n, T, I, True, np.random.default_rng(seed), short_video=short))
            np.testing.assert_array_equal(ours, ref, err_msg=f'train n={n} T={T} I={I} seed={seed}')
        for clips in (1, 3, 10):
            ref = SampleFrames(T, I, clips, opt, test_mode=True)(n)
            ours = np.concatenate(dense_indices(n, T, I, False, num_clips=clips, short_video=short))
            np.testing.assert_array_equal(ours, ref, err_msg=f'test n={n} T={T} I={I} clips={clips}')


def test_release_presets_sample_as_the_release():
    "ve8-release: dense 16x16, 1 validation clip and 10 test clips in test mode; short videos start at frame 0."
    from steanet.data.clips import role_num_clips
    cfg = make_config('ve8-release')
    dc = cfg.data
    assert (dc.sampling, dc.num_frames, dc.frame_interval, dc.short_video) == ('dense', 16, 16, 'loop')
    assert (role_num_clips(dc, 'val'), role_num_clips(dc, 'test')) == (1, 10)
    for n in (100, 255, 256, 1000):
        v = sample_indices(n, dc, False, num_clips=10)
        np.testing.assert_array_equal(np.concatenate(v), SampleFrames(16, 16, 10, test_mode=True)(n))
        t = sample_indices(n, dc, True, np.random.default_rng(5))
        np.testing.assert_array_equal(t[0], SampleFrames(16, 16, 1, rand=_Rand(5))(n))
    assert all(sample_indices(200, dc, True, np.random.default_rng(s))[0][0] == 0 for s in range(20))   # short: at 0
