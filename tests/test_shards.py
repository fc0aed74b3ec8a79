"""Features larger than memory: shards read on demand, and probes trained from them in mini-batches."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

from neurohook.features import Features, FeatureSource, LayerSpan
from neurohook.probe import LinearProbe, ProbeSpec, fit_probes
from neurohook.shards import ShardedFeatures
from neurohook.zscore import column_stats, standardize


@pytest.fixture()
def stored(tmp_path):
    """6000 utterances x 400 neurons in 4 shards, class information in the first columns."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 6000)
    X = (rng.standard_normal((6000, 400)) * rng.uniform(0.5, 20, 400) + rng.uniform(-5, 5, 400)).astype(np.float32)
    X[:, :6] += 3 * np.eye(3)[y].repeat(2, axis=1)
    spans = [LayerSpan("a", 0, 250, "mean"), LayerSpan("b", 250, 400, "std", ("std",))]
    full = Features(X, [f"u{i:04d}" for i in range(6000)], spans)
    (tmp_path / "shards").mkdir()
    for k, a in enumerate(range(0, 6000, 1600)):
        full.select_ids(full.ids[a : a + 1600]).save(tmp_path / "shards" / f"shard-{k:05d}.safetensors")
    return full, y, ShardedFeatures.open(tmp_path)


def test_rows_ids_layers_and_statistics_match_the_full_array(stored):
    full, _, sharded = stored
    assert sharded.shape == full.values.shape and len(sharded) == 6000 and sharded.ids == full.ids
    assert sharded.layer_names == ["a", "b"] and sharded.columns("b").tolist() == list(range(250, 400))
    idx = np.random.default_rng(1).permutation(6000)[:300]
    np.testing.assert_array_equal(sharded.rows(idx), full.values[idx])
    mean, std = sharded.column_stats(rows=128)
    np.testing.assert_allclose(mean, full.values.astype(np.float64).mean(0), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(std, full.values.astype(np.float64).std(0), rtol=1e-9)
    np.testing.assert_array_equal(sharded.load().values, full.values)


def _rss_file() -> int:
    """This process's resident pages of mapped files, in bytes (Linux)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssFile:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's /proc/self/status")
def test_pages_read_leave_the_resident_set_every_release_bytes(tmp_path, monkeypatch):
    """Reading 32 MB of shards (rows of 16 KB) row by row in random order and in chunks with RELEASE_BYTES
    = 4 MB keeps the shards' resident pages within a few MB (they stay in the page cache), the values
    read unchanged; without releases they stay mapped."""
    from neurohook import shards

    X = np.random.default_rng(4).standard_normal((2000, 4096)).astype(np.float32)
    full = Features(X, [f"u{i:04d}" for i in range(2000)], [LayerSpan("a", 0, 4096, "mean")])
    for k in range(2):
        full.select_ids(full.ids[1000 * k : 1000 * (k + 1)]).save(tmp_path / f"shard-{k:05d}.safetensors")
    order = np.random.default_rng(5).permutation(2000)
    grown = {}
    for budget in (1 << 40, 4 << 20, 1 << 40):  # the first round maps the code these paths run, too
        monkeypatch.setattr(shards, "RELEASE_BYTES", budget)
        opened, peak = ShardedFeatures.open(tmp_path), 0
        before = _rss_file()
        for i in order[:300]:
            assert np.array_equal(opened.rows([i]), X[[i]])
            peak = max(peak, _rss_file() - before)
        for a, block in opened.chunks(64):
            assert np.array_equal(block, X[a : a + len(block)])
            peak = max(peak, _rss_file() - before)
        grown[budget] = peak
    assert grown[1 << 40] > 25e6  # the test sees the pages: without releases the 32 MB stay mapped
    assert grown[4 << 20] < 12e6


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_rows_in_any_order_across_shards_are_the_stored_values(stored, tmp_path, dtype):
    full, y, _ = stored
    folder = tmp_path / dtype
    folder.mkdir()
    for k, a in enumerate(range(0, 6000, 1600)):
        full.select_ids(full.ids[a : a + 1600]).save(folder / f"shard-{k:05d}.safetensors", dtype=dtype)
    sharded, want = ShardedFeatures.open(folder), full.values.astype(dtype).astype(np.float32)
    for idx in ([1599, 1600, 1601, 7, 7, 5999, 0, 3200, 3199], np.arange(6000)[::-7], [], np.arange(1590, 1610)):
        idx = np.asarray(idx, dtype=np.int64)
        got = sharded.rows(idx)
        assert got.dtype == np.float32 and got.shape == (len(idx), 400)
        assert got.tobytes() == want[idx].tobytes()
    starts = [a for a, _ in sharded.chunks(500)]
    assert starts[:5] == [0, 500, 1000, 1500, 1600]
    np.testing.assert_array_equal(np.concatenate([b for _, b in sharded.chunks(500)]), want)
    rows = np.sort(np.random.default_rng(3).choice(6000, 2500, replace=False))  # the probes' normalised blocks
    cols = np.r_[300:400, 0:10]
    mean, scale = (v[cols] for v in column_stats(want, rows))
    np.testing.assert_array_equal(standardize(sharded, mean, scale, rows=rows, cols=cols),
                                  standardize(want, mean, scale, rows=rows, cols=cols))


def test_both_stores_are_feature_sources_with_one_answer(stored):
    full, _, sharded = stored
    assert isinstance(full, FeatureSource) and isinstance(sharded, FeatureSource)
    assert not isinstance(full.values, FeatureSource)
    idx = [5, 4000, 17]
    np.testing.assert_array_equal(full.rows(idx), sharded.rows(idx))
    for a, b in zip(full.column_stats(), sharded.column_stats()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    probe = LinearProbe(epochs=2).fit(full, stored[1])  # Features train from their values
    np.testing.assert_array_equal(probe.coef_, LinearProbe(epochs=2).fit(full.values, stored[1]).coef_)


def test_probes_train_from_shards_as_from_memory(stored):
    full, y, sharded = stored
    params = dict(epochs=1, l1=1e-4)
    a = LinearProbe(**params).fit(sharded, y)
    b = LinearProbe(**params).fit(full.values, y)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-3)  # the same optimum, summed in other blocks
    assert a.l2_ == b.l2_ and a.score(sharded, y) == pytest.approx(b.score(full.values, y), abs=2e-3)
    many = fit_probes(sharded, y, [ProbeSpec(0, 250), ProbeSpec(250, 400), ProbeSpec(0, 400)], **params)
    np.testing.assert_allclose(many[2].coef_, a.coef_, atol=1e-3)
    adam = dict(solver="adam", epochs=1, l1=1e-4, l2=0.0)  # minibatches read from the shards
    np.testing.assert_allclose(LinearProbe(**adam).fit(sharded, y).coef_, LinearProbe(**adam).fit(full.values, y).coef_,
                               atol=1e-5)


def test_training_from_shards_never_holds_the_whole_array(stored):
    _, y, sharded = stored
    full_bytes = sharded.shape[0] * sharded.shape[1] * 4
    tracemalloc.start()
    LinearProbe(epochs=1).fit(sharded, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < full_bytes / 2, (peak, full_bytes)


def test_errors_name_the_problem(stored, tmp_path):
    full, _, sharded = stored
    with pytest.raises(IndexError, match="out of range"):
        sharded.rows([6000])
    with pytest.raises(FileNotFoundError, match="no shard"):
        ShardedFeatures.open(tmp_path / "nothing")
    bad = full.values.copy()
    bad[7, 3] = np.nan
    (tmp_path / "bad").mkdir()
    Features(bad, full.ids, full.layers).save(tmp_path / "bad" / "shard-00000.safetensors")
    with pytest.raises(ValueError, match=r"NaN or Inf at row 7 \('u0007'\), column 3"):
        LinearProbe().fit(ShardedFeatures.open(tmp_path / "bad"), np.arange(6000) % 2)


def test_float16_storage_halves_the_files_round_trips_and_keeps_probe_accuracy(stored, tmp_path):
    full, y, _ = stored
    half = tmp_path / "half"
    (half / "shards").mkdir(parents=True)
    for k, a in enumerate(range(0, 6000, 1600)):
        full.select_ids(full.ids[a : a + 1600]).save(half / "shards" / f"shard-{k:05d}.safetensors", dtype="float16")
    sizes = [sum(p.stat().st_size for p in (root / "shards").glob("*.safetensors")) for root in (tmp_path, half)]
    assert sizes[1] < 0.52 * sizes[0]
    sharded = ShardedFeatures.open(half)
    back = sharded.load().values
    assert back.dtype == np.float32 and sharded.rows([0, 5999]).dtype == np.float32
    np.testing.assert_allclose(back, full.values, rtol=2.0**-11, atol=1e-7)  # float16's rounding, nothing else
    np.testing.assert_array_equal(back, full.values.astype(np.float16).astype(np.float32))
    tr, te = np.arange(4000), np.arange(4000, 6000)
    acc = [LinearProbe(l2=1e-3).fit(X[tr], y[tr]).score(X[te], y[te]) for X in (full.values, back)]
    assert abs(acc[0] - acc[1]) <= 0.002
    with pytest.raises(ValueError, match="column 3 .* beyond float16's range"):
        big = full.values.copy()
        big[7, 3] = 1e6
        Features(big, full.ids, full.layers).save(tmp_path / "big.safetensors", dtype="float16")


def test_the_whole_study_runs_from_shards_as_from_memory(tmp_path):
    """analyze() on ShardedFeatures (features and R.INIT read on demand, never loaded) equals it in memory."""
    from neurohook.analysis import analyze
    from neurohook.task_data import SelectedRows, task_data

    rng = np.random.default_rng(3)
    n, speakers = 480, np.repeat(np.arange(48), 10)
    y = speakers % 3  # a speaker property
    stores = []
    for k in range(2):  # features and an R.INIT-sized set
        X = (rng.standard_normal((n, 60)) * rng.uniform(0.5, 4, 60)).astype(np.float32)
        X[:, 40:44] += (1.5 - k) * np.eye(3, 4)[y] * 2  # information in layer "b" (interleaved with "a")
        X[:, 7] = 2.0  # a constant neuron
        spans = [LayerSpan("a", 0, 30, "mean"), LayerSpan("b", 30, 50, "mean"), LayerSpan("a", 50, 60, "mean")]
        full = Features(X, [f"u{i:04d}" for i in range(n)], spans)
        root = tmp_path / f"set{k}"
        (root / "shards").mkdir(parents=True)
        for j, a in enumerate(range(0, n, 200)):
            full.select_ids(full.ids[a : a + 200]).save(root / "shards" / f"shard-{j:05d}.safetensors")
        stores.append((full, ShardedFeatures.open(root)))
    labels = {u: int(v) for u, v in zip(stores[0][0].ids[:-20], y)}  # 20 unlabelled utterances left out
    spk = speakers.astype(str)
    options = dict(speakers=spk, seeds=(0, 1), percentages=(10, 50))
    memory = analyze(stores[0][0], labels, rinit_features=stores[1][0], **options).to_dict()
    sharded = analyze(stores[0][1], labels, rinit_features=stores[1][1], **options).to_dict()
    d = task_data(stores[0][1], labels, "task", spk, stores[1][1], None)
    assert isinstance(d.X, SelectedRows) and isinstance(d.X_rinit, SelectedRows) and d.constant.sum() == 1

    def close(a, b, where="result"):
        if isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for key in a:
                close(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list):
            assert len(a) == len(b), where
            for i, (u, v) in enumerate(zip(a, b)):
                close(u, v, f"{where}[{i}]")
        elif isinstance(a, float):
            assert a == pytest.approx(b, abs=1e-6), where
        else:
            assert a == b, where

    close(memory, sharded)
    assert memory["tasks"]["task"]["oracle"]["mean"] > 0.6  # the study found the planted information


def test_rows_and_columns_of_shards_train_as_of_the_array(stored):
    full, y, sharded = stored
    rows, cols = np.arange(0, 6000, 3), np.r_[300:320, 0:10]
    specs = [ProbeSpec(0, 10), ProbeSpec(0, 30)]
    for params in (dict(l2=1e-3), dict(solver="adam", epochs=1, l2=0.0)):
        a = fit_probes(sharded, y, specs, rows=rows, columns=cols, **params)
        b = fit_probes(full.values[rows][:, cols], y[rows], specs, **params)
        for p, q in zip(a, b):
            np.testing.assert_allclose(p.coef_, q.coef_, atol=1e-4)
