"""Streaming statistical pooling against a naive float64 reference that keeps every frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurohook.pooling import RunningPool, pool_frames

MODES = ["mean", "std", "stats", "max", "min"]


def reference(x: torch.Tensor, lengths: list[int], mode: str, unbiased: bool = False) -> np.ndarray:
    """Naive pooling of frames x (B, T, *F) in float64, item by item, padding sliced away."""
    rows = []
    for b, n in enumerate(lengths):
        f = x[b, :n].double().reshape(n, -1).numpy()
        mean = f.mean(0)
        std = f.std(0, ddof=1 if unbiased and n > 1 else 0) if n > 1 else np.zeros_like(mean)
        rows.append(
            {
                "mean": mean,
                "std": std,
                "stats": np.concatenate([mean, std]),
                "max": f.max(0),
                "min": f.min(0),
            }[mode]
        )
    return np.stack(rows)


def rel_err(got: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    """Max abs error divided by max abs reference value."""
    got = np.asarray(got, dtype=np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def padded_batch(lengths: list[int], dim: int = 6, offset: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Random frames (B, max(lengths), dim) whose padding is garbage (large values, NaN)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), dim, generator=g) * 3 + offset
    for b, n in enumerate(lengths):
        x[b, n:] = 1e6
        if n + 1 < x.shape[1]:
            x[b, n + 1 :] = float("nan")
    return x


@pytest.mark.parametrize("mode", MODES)
def test_one_shot_matches_reference_with_mixed_lengths(mode: str) -> None:
    lengths = [17, 1, 40, 9]
    x = padded_batch(lengths)
    got = pool_frames(x, torch.tensor(lengths), mode)
    ref = reference(x, lengths, mode)
    assert got.shape == ref.shape
    assert not torch.isnan(got).any()
    assert rel_err(got, ref) <= 1e-5


@pytest.mark.parametrize("mode", ["std", "stats"])
def test_unbiased_option_and_single_frame_std_is_zero(mode: str) -> None:
    lengths = [1, 5, 2]
    x = padded_batch(lengths)
    got = pool_frames(x, torch.tensor(lengths), mode, unbiased=True)
    assert rel_err(got, reference(x, lengths, mode, unbiased=True)) <= 1e-5
    width = x.shape[2]
    assert torch.all(got[0, -width:] == 0)  # the one-frame item: std 0, not NaN
    pop = pool_frames(x, torch.tensor(lengths), "std")
    assert torch.all(pop[0] == 0)


@pytest.mark.parametrize("mode", MODES)
def test_chunked_streaming_equals_one_shot(mode: str) -> None:
    lengths = [50, 23, 7]
    x = padded_batch(lengths, seed=1)
    one = RunningPool(mode)
    one.update(x, torch.tensor(lengths), torch.tensor([0, 1, 2]))
    streamed = RunningPool(mode)
    # feed the utterances in uneven pieces, in a different slot order, with a zero-frame piece
    cuts = [0, 3, 3, 20, 21, 50]
    for a, b in zip(cuts[:-1], cuts[1:]):
        piece = x[[2, 0, 1], a:b] if b > a else x[[2, 0, 1], :0]
        plen = [max(0, min(lengths[i], b) - a) for i in (2, 0, 1)]
        streamed.update(piece, torch.tensor(plen), torch.tensor([2, 0, 1]))
    ref = reference(x, lengths, mode)
    assert rel_err(streamed.result(3), ref) <= 1e-5
    assert rel_err(one.result(3), ref) <= 1e-5
    assert torch.equal(streamed.counts(3), torch.tensor(lengths))


def test_internal_time_chunking_matches_single_pass() -> None:
    lengths = [300, 111]
    x = padded_batch(lengths, seed=2)
    big = RunningPool("stats")
    small = RunningPool("stats", chunk_elements=2 * 6 * 7)  # 7 frames at a time
    for pool in (big, small):
        pool.update(x, torch.tensor(lengths), torch.tensor([0, 1]))
    assert rel_err(small.result(2), reference(x, lengths, "stats")) <= 1e-5
    assert rel_err(small.result(2), big.result(2).double().numpy()) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["stats", "max"])
def test_half_precision_activations_accumulate_in_float32(dtype: torch.dtype, mode: str) -> None:
    lengths = [64, 30]
    x = padded_batch(lengths, offset=2.0, seed=3)
    x = torch.where(torch.isnan(x), torch.zeros_like(x), x).clamp(-1e4, 1e4).to(dtype)
    got = pool_frames(x, torch.tensor(lengths), mode)
    assert got.dtype == torch.float32
    assert rel_err(got, reference(x, lengths, mode)) <= 1e-5  # exact stats of the half values


def test_long_utterance_with_large_offset_stays_accurate() -> None:
    torch.manual_seed(4)
    n = 200_000
    x = (torch.randn(1, n, 4, dtype=torch.float64) + 1e4).float()
    pool = RunningPool("stats", chunk_elements=1 << 16)
    for a in range(0, n, 50_000):  # streamed in four calls
        pool.update(x[:, a : a + 50_000], None, torch.tensor([0]))
    got = pool.result(1).double().numpy()[0]
    ref = reference(x, [n], "stats")[0]
    mean_ref, std_ref = ref[:4], ref[4:]
    assert np.abs(got[:4] - mean_ref).max() / np.abs(mean_ref).max() <= 1e-6
    assert np.abs(got[4:] - std_ref).max() / std_ref.min() <= 1e-5


def test_float64_accumulation_option() -> None:
    lengths = [12, 5]
    x = padded_batch(lengths, offset=1e3)
    pool = RunningPool("stats", dtype=torch.float64)
    pool.update(x, torch.tensor(lengths), torch.tensor([0, 1]))
    assert rel_err(pool.result(2), reference(x, lengths, "stats")) <= 1e-6
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        RunningPool("mean", dtype=torch.float16)


def test_utterance_level_outputs_pass_through() -> None:
    x = torch.randn(3, 5)
    pool = RunningPool("none")
    pool.update(x.unsqueeze(1), None, torch.tensor([2, 0, 1]))
    assert torch.equal(pool.result(3), x[[1, 2, 0]])


def test_multi_axis_neurons_flatten_in_c_order() -> None:
    x = torch.randn(2, 9, 3, 4)  # (B, T, C, F)
    got = pool_frames(x, torch.tensor([9, 4]), "mean")
    ref = np.stack([x[0].mean(0).reshape(-1).numpy(), x[1, :4].mean(0).reshape(-1).numpy()])
    assert got.shape == (2, 12)
    assert rel_err(got, ref) <= 1e-6


def test_storage_grows_and_keeps_rows() -> None:
    pool = RunningPool("mean")
    x = torch.randn(1, 3, 2)
    pool.update(x, None, torch.tensor([0]))
    pool.update(x + 1, None, torch.tensor([40]))
    assert pool.capacity >= 41
    res = pool.result(41)
    assert torch.allclose(res[0], x[0].mean(0)) and torch.allclose(res[40], x[0].mean(0) + 1)


def test_unknown_pooling_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        RunningPool("median")


def conv_like(lengths: list[int], channels: int = 5, seed: int = 6) -> torch.Tensor:
    """Frames (B, T, C) as a conv layer's (B, C, T) output permuted: time at unit stride."""
    x = padded_batch(lengths, dim=channels, offset=50.0, seed=seed)
    return x.transpose(1, 2).contiguous().transpose(1, 2)


LAYOUTS = {
    "units contiguous (B, T, D)": lambda lengths: padded_batch(lengths, dim=7, offset=50.0, seed=5),
    "time contiguous (conv (B, C, T))": conv_like,
    "conv2d (B, C, F, T) as (B, T, C, F)": lambda lengths: conv_like(lengths, channels=12).reshape(
        len(lengths), max(lengths), 3, 4),
    "no unit stride (tensor path)": lambda lengths: padded_batch(lengths, dim=14, offset=50.0, seed=7)[:, :, ::2],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("path", ["default", "tensor operations"])
def test_compiled_and_tensor_paths_match_reference_in_every_layout(layout: str, path: str, monkeypatch) -> None:
    from neurohook import moments

    if path == "tensor operations":  # the path CUDA and half-precision frames take
        monkeypatch.setattr(moments, "_compiled_moments", lambda *args: None)
    lengths = [33, 1, 0, 20]
    x = LAYOUTS[layout](lengths)
    got = pool_frames(x, torch.tensor(lengths), "stats")
    ref = reference(x[[0, 1, 3]], [33, 1, 20], "stats")
    assert rel_err(got[[0, 1, 3]], ref) <= 1e-6
    assert torch.all(got[2] == 0)  # no frames: zeros, not NaN


def test_compiled_kernel_is_used_where_it_applies_and_thread_count_does_not_change_it() -> None:
    from neurohook import moments
    from neurohook.ranking import _core

    lengths = [40, 17]
    count = torch.tensor(lengths)
    for x in (padded_batch(lengths, dim=600), conv_like(lengths, channels=600)):
        assert moments._compiled_moments(x, count) is not None
        one = _core.frame_moments(x.numpy(), count.numpy(), 1)
        two = _core.frame_moments(x.numpy(), count.numpy(), 2)
        assert all(np.array_equal(a, b) for a, b in zip(one, two))
    half = padded_batch(lengths).half()
    assert moments._compiled_moments(half, count) is None
    assert moments._compiled_moments(padded_batch(lengths)[:, :, ::2], count) is None
    with pytest.raises(TypeError, match="unit stride on time or on units"):
        _core.frame_moments(padded_batch(lengths).numpy()[:, ::2, ::2], count.numpy())
    with pytest.raises(ValueError, match=r"count\[0\] = 41 is out of range"):
        _core.frame_moments(padded_batch(lengths).numpy(), np.array([41, 0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["stats", "mean", "max"])
def test_new_rows_written_directly_equal_the_merge_path(dtype: torch.dtype, mode: str, monkeypatch) -> None:
    """The compiled write of rows not seen before (RunningPool._store_new_rows) against the general merge
    path and the float64 reference: rows in any order, a later call mixing new and seen rows."""
    first = [33, 1, 20]
    x1 = conv_like(first, channels=5, seed=8)
    x2 = padded_batch([12, 7], dim=5, offset=50.0, seed=9)
    lengths2 = [12, 7]

    def feed(pool: RunningPool) -> torch.Tensor:
        pool.update(x1, torch.tensor(first), torch.tensor([4, 0, 2]))
        pool.update(x2, torch.tensor(lengths2), torch.tensor([1, 0]))  # slot 0 seen before: merged
        return pool.result(5)

    direct = RunningPool(mode, dtype=dtype)
    got = feed(direct)
    stored = direct._state
    monkeypatch.setattr(RunningPool, "_store_new_rows", lambda *args: False)
    merged = feed(RunningPool(mode, dtype=dtype))
    seen = [0, 1, 2, 4]
    assert rel_err(got[seen], merged[seen].double().numpy()) <= 1e-6
    assert stored.mean is None or stored.mean.dtype == dtype
    frames0 = torch.cat([x1[1, :1], x2[1, :7]])[None]
    ref = np.concatenate([reference(frames0, [8], mode), reference(x2[:1], [12], mode),
                          reference(x1[2:], [20], mode), reference(x1[:1], [33], mode)])
    assert rel_err(got[seen], ref) <= 1e-5
    assert torch.equal(direct.counts(5), torch.tensor([8, 12, 20, 0, 33]))


@pytest.mark.parametrize("store_dtype", [np.float32, np.float64])
def test_compiled_store_into_rows_against_reference_and_its_refusals(store_dtype: type) -> None:
    """_core.store_frame_moments: counts, means and M2 written into the given rows (frames (B, T, F),
    (B, F, T), (B, F); counts clamped to [0, T]) equal the float64 reference; where it must not write
    (a row seen before, repeated or beyond the storage; frames of another width, dtype or batch size),
    False and the storage unchanged; storage of the wrong kind raises."""
    from neurohook.ranking import _core

    lengths, F = [9, 1, 4], 5
    x = padded_batch(lengths, dim=F, offset=50.0, seed=3)  # (3, 9, 5)
    ref_mean = np.stack([x[b, :n].double().mean(0).numpy() for b, n in enumerate(lengths)])
    ref_m2 = np.stack([((x[b, :n].double() - x[b, :n].double().mean(0)) ** 2).sum(0).numpy()
                       for b, n in enumerate(lengths)])
    count_in = np.array([9, 1, 4])
    frames_of = {"BTD": (x.numpy(), False), "BDT": (x.transpose(1, 2).numpy(), True)}
    for name, (frames, time_last) in frames_of.items():
        counts, mean, m2 = np.zeros(6, np.int64), np.zeros((6, F), store_dtype), np.zeros((6, F), store_dtype)
        clamped = np.array([40, 1, 4]) if name == "BDT" else count_in  # 40 > T: clamped to 9
        assert _core.store_frame_moments(frames, clamped, np.array([5, 0, 2]), counts, mean, m2, time_last)
        assert counts.tolist() == [1, 0, 4, 0, 0, 9]
        assert rel_err(mean[[5, 0, 2]], ref_mean) <= 1e-6 and rel_err(m2[[5, 0, 2]], ref_m2) <= 1e-5
        assert not mean[[1, 3, 4]].any()
        before = (counts.copy(), mean.copy(), m2.copy())
        refused = [
            (frames, clamped, np.array([1, 3, 5])),  # row 5 seen before
            (frames, clamped, np.array([1, 1, 3])),  # repeated
            (frames, clamped, np.array([1, 3, 6])),  # beyond the storage
            (frames[:2], clamped[:2], np.array([1, 3, 4])),  # 2 items, 3 rows
            (frames.astype(np.float64), clamped, np.array([1, 3, 4])),
        ]
        for args in refused:
            assert not _core.store_frame_moments(*args, counts, mean, m2, time_last)
        assert not _core.store_frame_moments(frames, clamped, np.array([1, 3, 4]), counts[:6], mean[:, :4].copy(),
                                             None, time_last)  # another width
        assert all(np.array_equal(a, b) for a, b in zip(before, (counts, mean, m2)))
    counts, mean = np.zeros(4, np.int64), np.zeros((4, F), store_dtype)
    assert _core.store_frame_moments(x[:, 0].numpy(), None, np.array([3, 1, 0]), counts, mean, None)  # (B, F)
    assert counts.tolist() == [1, 1, 0, 1] and np.allclose(mean[[3, 1, 0]], x[:, 0].numpy(), rtol=1e-6)
    with pytest.raises(TypeError, match="counts must be a writable, C-contiguous int64"):
        _core.store_frame_moments(x.numpy(), None, np.array([0, 1, 2]), np.zeros(4, np.int32), mean, None)
    mean.setflags(write=False)
    with pytest.raises(ValueError, match="mean must be writable"):
        _core.store_frame_moments(x.numpy(), None, np.array([0, 1, 2]), np.zeros(4, np.int64), mean, None)
