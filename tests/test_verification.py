"""Tests of neurohook.verification: metrics against brute force, trial generation, scoring, analyses."""

from __future__ import annotations

import itertools
import json
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import neurohook
from neurohook import ranking
from neurohook import verification as V

# --------------------------------------------------------------------------------------------------
# Independent references: plain Python loops over every threshold.


def brute_points(scores, labels):
    """(FAR, FRR) at every threshold t in sorted(distinct scores) + [inf], accepting score >= t."""
    scores = [float(s) for s in scores]
    labels = [bool(y) for y in labels]
    nt = sum(labels)
    nn = len(labels) - nt
    points = []
    for t in sorted(set(scores)) + [math.inf]:
        miss = sum(1 for s, y in zip(scores, labels) if y and s < t)
        fa = sum(1 for s, y in zip(scores, labels) if not y and s >= t)
        if t == math.inf:
            miss, fa = nt, 0  # reject everything
        points.append((fa / nn, miss / nt))
    return points


def brute_eer(scores, labels):
    """Where the polyline through the operating points crosses FAR == FRR."""
    pts = brute_points(scores, labels)
    for (far0, frr0), (far1, frr1) in zip(pts, pts[1:]):
        d0, d1 = frr0 - far0, frr1 - far1
        if d0 < 0 <= d1:
            u = d0 / (d0 - d1)
            return frr0 + u * (frr1 - frr0)
    raise AssertionError("no crossing")  # the first point has d = -1 and the last d = +1


def brute_min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    costs = [c_miss * p_target * frr + c_fa * (1 - p_target) * far for far, frr in brute_points(scores, labels)]
    return min(costs) / min(c_miss * p_target, c_fa * (1 - p_target))


def random_case(rng, n, ties):
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[0], labels[1] = True, False
    scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    if ties:
        scores = np.round(scores * 2) / 2  # many equal scores across both classes
    return scores, labels


# --------------------------------------------------------------------------------------------------
# eer / min_dcf


@pytest.mark.parametrize("ties", [False, True])
def test_eer_and_min_dcf_match_brute_force_on_random_sets(ties):
    rng = np.random.default_rng(1 + ties)
    for _ in range(40):
        scores, labels = random_case(rng, int(rng.integers(2, 120)), ties)
        assert V.eer(scores, labels) == pytest.approx(brute_eer(scores, labels), abs=1e-12)
        p = float(rng.choice([0.01, 0.05, 0.5]))
        cm, cf = float(rng.uniform(0.5, 10)), float(rng.uniform(0.5, 10))
        assert V.min_dcf(scores, labels, p, cm, cf) == pytest.approx(brute_min_dcf(scores, labels, p, cm, cf), abs=1e-12)


def test_eer_lies_between_the_step_curve_bounds():
    rng = np.random.default_rng(7)
    for _ in range(20):
        scores, labels = random_case(rng, 80, ties=True)
        pts = brute_points(scores, labels)
        lower = max(min(far, frr) for far, frr in pts)
        upper = min(max(far, frr) for far, frr in pts)
        assert lower - 1e-12 <= V.eer(scores, labels) <= upper + 1e-12


def test_eer_matches_s3prl_style_roc_root_find():
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(3)
    labels = rng.random(5000) < 0.3
    scores = rng.normal(size=5000) + 1.2 * labels
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1)
    ref = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    assert V.eer(scores, labels) == pytest.approx(ref, abs=1e-9)


def test_eer_hand_made_cases():
    # ties: targets {0.5, 0.5, 1}, non-targets {0.5, 0.5, 0}; the tied group runs from
    # (FAR 2/3, FRR 0) to (FAR 0, FRR 2/3), crossing the diagonal at 1/3.
    assert V.eer([0.5, 0.5, 0.5, 0.5, 1, 0], [1, 0, 1, 0, 1, 0]) == pytest.approx(1 / 3)
    # all scores equal
    assert V.eer(np.full(10, 0.3), np.arange(10) % 3 == 0) == pytest.approx(0.5)
    assert V.min_dcf(np.full(10, 0.3), np.arange(10) % 3 == 0) == pytest.approx(1.0)
    # perfectly separated (and perfectly inverted)
    y = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    s = np.array([3.0, 2.5, 2.0, 1.0, 0.5, 0.0, -1.0])
    assert V.eer(s, y) == 0.0
    assert V.min_dcf(s, y) == 0.0
    assert V.eer(-s, y) == pytest.approx(1.0)
    # one target trial only, in the middle of 9 non-targets: FAR stays 4/9 while FRR jumps 0 -> 1
    s = np.r_[0.55, np.linspace(0.1, 0.9, 9)]
    y = np.r_[True, np.zeros(9, bool)]
    assert V.eer(s, y) == pytest.approx(4 / 9)
    assert V.eer(s, y) == pytest.approx(brute_eer(s, y))
    assert V.min_dcf(s, y, 0.3) == pytest.approx(brute_min_dcf(s, y, 0.3))


def test_eer_invariances():
    rng = np.random.default_rng(11)
    scores, labels = random_case(rng, 300, ties=True)
    ref = V.eer(scores, labels)
    perm = rng.permutation(len(scores))
    assert V.eer(scores[perm], labels[perm]) == ref  # order of trials (and of tied scores)
    assert V.eer(-scores, ~labels) == pytest.approx(ref)  # swapping the roles of the two classes
    assert V.eer(scores * 3 + 1, labels.astype(int)) == pytest.approx(ref)  # monotone map; 0/1 labels
    assert V.eer(scores.astype(np.float32), labels) == pytest.approx(ref)


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(5)
    labels = rng.random(2000) < 0.5
    scores = rng.normal(size=2000) + labels
    e = V.eer(scores, labels)
    lo, hi = V.bootstrap_ci(scores, labels, n_boot=60, seed=1)
    assert lo <= e <= hi and hi - lo < 0.1
    assert V.bootstrap_ci(scores, labels, n_boot=60, seed=1) == (lo, hi)
    lo2, hi2 = V.bootstrap_ci(scores, labels, "min_dcf", n_boot=30, seed=1, p_target=0.05)
    assert 0 <= lo2 <= hi2 <= 1


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([0.1, 0.2, 0.3], [1, 1, 1], "no non-target"),
        ([0.1, 0.2, 0.3], [0, 0, 0], "no target"),
        ([0.1, np.nan, 0.3], [1, 0, 1], "NaN"),
        ([0.1, 0.2, 0.3], [1, 0], "different lengths"),
        ([0.1, 0.2, 0.3], [1, 0, 2], "0/1"),
        ([], [], "no target"),
    ],
)
def test_metric_bad_input(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        V.eer(scores, labels)
    with pytest.raises(ValueError, match=match):
        V.min_dcf(scores, labels)


def test_min_dcf_bad_parameters():
    with pytest.raises(ValueError, match="p_target"):
        V.min_dcf([0.0, 1.0], [0, 1], p_target=1.0)
    with pytest.raises(ValueError, match="c_miss"):
        V.min_dcf([0.0, 1.0], [0, 1], c_miss=0)


# --------------------------------------------------------------------------------------------------
# Trials


def labelled_set(seed=0):
    """Utterances of 16 speakers: gender by speaker, languages en/ru (speaker 0 speaks both)."""
    rng = np.random.default_rng(seed)
    ids, spk, gen, lang = [], [], [], []
    for s in range(16):
        for u in range(int(rng.integers(2, 7))):
            ids.append(f"spk{s:02d}/utt{u}.wav")
            spk.append(f"spk{s:02d}")
            gen.append("f" if s % 3 == 0 else "m")
            lang.append("en" if (s < 9 if s else u % 2) else "ru")
    return ids, spk, gen, lang


def test_make_trials_all_pairs_equal_brute_enumeration():
    ids, spk, gen, lang = labelled_set()
    trials = V.make_trials(ids, spk, genders=gen, same_gender=True, balanced=False)
    of = dict(zip(ids, zip(spk, gen)))
    got = {(frozenset((e, t)), bool(y)) for e, t, y in zip(trials.enrol, trials.test, trials.target)}
    want = set()
    for i, j in itertools.combinations(range(len(ids)), 2):
        if spk[i] == spk[j]:
            want.add((frozenset((ids[i], ids[j])), True))
        elif gen[i] == gen[j]:
            want.add((frozenset((ids[i], ids[j])), False))
    assert len(got) == len(trials) == len(want)  # no pair twice
    assert got == want
    assert all(e != t for e, t in zip(trials.enrol, trials.test))
    assert all((of[e][0] == of[t][0]) == y for e, t, y in zip(trials.enrol, trials.test, trials.target))


def test_make_trials_constraints_and_reproducibility():
    ids, spk, gen, lang = labelled_set()
    of = {i: (s, g, l) for i, s, g, l in zip(ids, spk, gen, lang)}
    kw = dict(genders=gen, languages=lang, same_gender=True, per_language=True, n_target=12, seed=4)
    trials = V.make_trials(ids, spk, **kw)
    assert trials.language is not None
    for e, t, y, l in zip(trials.enrol, trials.test, trials.target, trials.language):
        assert e != t
        assert (of[e][0] == of[t][0]) == y  # target iff same speaker
        assert of[e][1] == of[t][1]  # same gender (also for non-targets)
        assert of[e][2] == of[t][2] == l  # both utterances in the trial's language
    assert len({frozenset(p) for p in zip(trials.enrol, trials.test)}) == len(trials)
    per_lang = trials.by_language()
    assert set(per_lang) == {"en", "ru"}
    for sub in per_lang.values():
        assert sub.n_target == sub.n_nontarget == 12  # balanced within each language
    again = V.make_trials(ids, spk, **kw)
    assert (again.enrol, again.test, again.target.tolist()) == (trials.enrol, trials.test, trials.target.tolist())
    other = V.make_trials(ids, spk, **{**kw, "seed": 5})
    assert (other.enrol, other.test) != (trials.enrol, trials.test)


def test_make_trials_bad_input():
    ids, spk, gen, lang = labelled_set()
    with pytest.raises(ValueError, match="eligible"):
        V.make_trials(ids, spk, n_target=10**6)
    with pytest.raises(ValueError, match="unique"):
        V.make_trials(ids + ids[:1], spk + spk[:1])
    with pytest.raises(ValueError, match="genders"):
        V.make_trials(ids, spk, same_gender=True)
    with pytest.raises(ValueError, match="more than one gender"):
        V.make_trials(ids, spk, genders=["m"] + gen[1:])  # speaker 0 is "f" on its other utterances
    with pytest.raises(ValueError, match="different lengths"):
        V.make_trials(ids, spk[:-1])


def test_read_and_write_trials(tmp_path):
    vox = tmp_path / "veri.txt"
    vox.write_text("1 id10270/a.wav id10270/b.wav\n0 id10270/a.wav id10300/c.wav\n\n")
    t = V.read_trials(vox)
    assert t.enrol == ["id10270/a.wav", "id10270/a.wav"]
    assert t.test == ["id10270/b.wav", "id10300/c.wav"]
    assert t.target.tolist() == [True, False]
    csv_path = tmp_path / "trials.csv"
    csv_path.write_text("Enrol,test,target,language\nx,y,target,en\nx,z,0,ru\n")
    c = V.read_trials(csv_path)
    assert (c.enrol, c.test, c.target.tolist(), c.language) == (["x", "x"], ["y", "z"], [True, False], ["en", "ru"])
    V.write_trials(c, tmp_path / "out.csv")
    back = V.read_trials(tmp_path / "out.csv")
    assert (back.enrol, back.test, back.target.tolist(), back.language) == (c.enrol, c.test, c.target.tolist(), c.language)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 a b\nmaybe a c\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        V.read_trials(bad)
    (tmp_path / "short.txt").write_text("1 a\n")
    with pytest.raises(ValueError, match="3 fields"):
        V.read_trials(tmp_path / "short.txt")


# --------------------------------------------------------------------------------------------------
# Scoring and the layer-wise analysis


def synthetic_features(n_spk=24, n_utt=6, seed=0, d=32):
    """Layer 'spk' = speaker centroid + noise; layer 'noise' = noise only; 'mixed' in between."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(n_spk, d))
    spk = np.repeat(np.arange(n_spk), n_utt)
    ids = [f"s{s}/u{u}" for s in range(n_spk) for u in range(n_utt)]
    spk_layer = centroids[spk] + 0.4 * rng.normal(size=(len(spk), d))
    noise_layer = rng.normal(size=(len(spk), d))
    mixed = 0.3 * centroids[spk] + rng.normal(size=(len(spk), d))
    values = np.hstack([noise_layer, spk_layer, mixed]).astype(np.float32)
    layers = {"noise": (0, d), "spk": (d, 2 * d), "mixed": (2 * d, 3 * d)}
    return values, ids, [f"S{s}" for s in spk], layers


def ref_cosine(values, ids, trials, cols):
    index = {x: i for i, x in enumerate(ids)}
    out = []
    for e, t in zip(trials.enrol, trials.test):
        a = values[index[e], cols].astype(np.float64)
        b = values[index[t], cols].astype(np.float64)
        out.append(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return np.array(out)


def test_layer_scores_match_per_trial_cosine():
    values, ids, spk, layers = synthetic_features(n_spk=6, n_utt=4)
    trials = V.make_trials(ids, spk, seed=1)
    scores = V.layer_scores(values, ids, layers, trials)
    assert list(scores) == ["noise", "spk", "mixed", "ALL"]
    for name, (s, e) in layers.items():
        np.testing.assert_allclose(scores[name], ref_cosine(values, ids, trials, slice(s, e)), atol=1e-10)
    np.testing.assert_allclose(scores["ALL"], ref_cosine(values, ids, trials, slice(None)), atol=1e-10)
    cols = np.array([3, 40, 70, 5])
    np.testing.assert_allclose(V.cosine_scores(values, ids, trials, cols), ref_cosine(values, ids, trials, cols), atol=1e-10)
    # scale of an embedding does not matter (length normalisation)
    scaled = values * np.linspace(0.5, 4, len(ids), dtype=np.float32)[:, None]
    np.testing.assert_allclose(V.layer_scores(scaled, ids, layers, trials)["spk"], scores["spk"], atol=1e-6)


def test_layerwise_eer_finds_the_speaker_layer():
    values, ids, spk, layers = synthetic_features()
    trials = V.make_trials(ids, spk, seed=2)
    res = V.layerwise_eer(values, ids, layers, trials, n_boot=20)
    assert [e.name for e in res.layers] == ["noise", "spk", "mixed", "ALL"]
    assert res.best_layer == "spk"
    assert res.get("spk").eer < 0.05
    assert res.get("noise").eer > 0.3
    assert res.get("spk").eer < res.get("mixed").eer < res.get("noise").eer
    assert res.get("ALL").n_neurons == 96 and res.get("spk").n_neurons == 32
    lo, hi = res.get("noise").eer_ci
    assert lo <= res.get("noise").eer <= hi
    assert res.n_target == trials.n_target and res.n_nontarget == trials.n_nontarget
    assert V.LayerwiseVerification.from_dict(json.loads(res.to_json())) == res


def test_layer_map_forms_and_features_duck_typing():
    values, ids, spk, layers = synthetic_features(n_spk=6, n_utt=4)
    trials = V.make_trials(ids, spk, seed=1)
    ref = V.layerwise_eer(values, ids, layers, trials)
    as_objects = [SimpleNamespace(name=k, start=s, end=e) for k, (s, e) in layers.items()]
    as_slices = {k: slice(s, e) for k, (s, e) in layers.items()}
    as_dicts = [{"name": k, "start": s, "end": e} for k, (s, e) in layers.items()]
    for form in (as_objects, as_slices, as_dicts, SimpleNamespace(layers=as_objects)):
        assert V.layerwise_eer(values, ids, form, trials) == ref
    feats = SimpleNamespace(values=values, ids=ids, layers=as_objects)
    assert V.features_layerwise_eer(feats, trials) == ref
    assert V.evaluate(feats, trials).layerwise == ref
    with pytest.raises(TypeError, match="Features-like"):
        V.features_layerwise_eer(values, trials)
    # adjacent spans of one layer (e.g. its mean then its std block) are one layer; split ones are refused
    split = [("noise", 0, 32), ("spk", 32, 50), ("spk", 50, 64), ("mixed", 64, 96)]
    assert V.layerwise_eer(values, ids, split, trials) == ref
    with pytest.raises(ValueError, match="non-adjacent"):
        V.layerwise_eer(values, ids, [("spk", 32, 40), ("noise", 0, 32), ("spk", 50, 64)], trials)


def test_scoring_bad_input():
    values, ids, spk, layers = synthetic_features(n_spk=4, n_utt=3)
    trials = V.make_trials(ids, spk, seed=1)
    missing = V.Trials(["s0/u0", "nobody/x", "ghost/y"], ["s0/u1", "s1/u0", "s0/u0"], [1, 0, 0])
    with pytest.raises(ValueError, match=r"2 trial utterance id\(s\) are not in the features.*nobody/x.*ghost/y"):
        V.layerwise_eer(values, ids, layers, missing)
    with pytest.raises(ValueError, match="appears more than once"):
        V.layer_scores(values, ids[:-1] + ids[:1], layers, trials)
    with pytest.raises(ValueError, match="rows"):
        V.layer_scores(values, ids[:-1], layers, trials)
    with pytest.raises(ValueError, match="outside"):
        V.layer_scores(values, ids, {"big": (0, 1000)}, trials)
    with pytest.raises(ValueError, match="reserved"):
        V.layer_scores(values, ids, {"ALL": (0, 10)}, trials)
    only_targets = trials.subset(trials.target)
    with pytest.raises(ValueError, match="no non-target"):
        V.layerwise_eer(values, ids, layers, only_targets)
    with pytest.raises(ValueError, match="no target"):
        V.layerwise_eer(values, ids, layers, trials.subset(~trials.target))
    nan = values.copy()
    nan[0, 40] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        V.layer_scores(nan, ids, layers, trials.subset(np.array([i for i in range(len(trials)) if "s0/u0" in (trials.enrol[i], trials.test[i])])))
    with pytest.raises(ValueError, match="different lengths"):
        V.Trials(["a"], ["b", "c"], [1])


# --------------------------------------------------------------------------------------------------
# Neuron level (Table 4)


def planted_layer(n_spk, n_utt, seed, informative):
    """40-neuron layer: the `informative` columns carry the speaker, the others are noise."""
    rng = np.random.default_rng(seed)
    spk = np.repeat(np.arange(n_spk), n_utt)
    x = rng.normal(size=(len(spk), 40))
    x[:, informative] += 2.0 * rng.normal(size=(n_spk, len(informative)))[spk]
    other = rng.normal(size=(len(spk), 8))  # a second, useless layer
    return np.hstack([other, x]).astype(np.float32), spk


def logistic_factory(seed):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=300, random_state=seed)


def test_neuron_eer_ranks_planted_neurons_and_finds_a_small_set():
    informative = np.arange(0, 40, 4)  # 10 of 40 neurons (25%)
    values, spk = planted_layer(20, 6, 0, informative)
    ids = [f"e{i}" for i in range(len(spk))]
    probe_values, probe_spk = planted_layer(12, 10, 1, informative)
    trials = V.make_trials(ids, spk, seed=0)
    layers = {"other": (0, 8), "L1": (8, 48)}
    res = V.neuron_eer(
        values, ids, layers, trials, probe_values, [f"p{s}" for s in probe_spk],
        probe_factory=logistic_factory, percentages=(10, 25, 50), tolerance=0.02, runs=2,
        speakers=dict(zip(ids, map(str, spk))),
    )
    assert res.layer == "L1" and (res.layer_start, res.layer_end) == (8, 48)
    assert sorted(res.order) == list(range(8, 48))
    # the proxy ranking (neuron_ordering of the probe's coef_) puts the planted neurons first
    assert len(set(res.order[:10]) & set((8 + informative).tolist())) >= 9
    s25 = res.subset(25)
    assert s25.n_neurons == 10
    assert s25.eer_top < s25.eer_bottom - 0.2
    assert s25.eer_top < s25.eer_random
    assert res.minimal_percent is not None and res.minimal_percent <= 25
    assert res.subset(res.minimal_percent).eer_top <= res.eer_layer + 0.02
    assert len(res.minimal_neurons) == res.subset(res.minimal_percent).n_neurons
    assert res.probe_train_accuracy > 0.9 and res.n_probe_speakers == 12
    # EER(Lb) is the full-layer EER and agrees with the layer-wise analysis
    assert res.eer_layer == pytest.approx(V.layerwise_eer(values, ids, layers, trials).get("L1").eer)
    # the top subset really is ranking.select(order, k, "top") scored independently
    top = ranking.select(np.array(res.order) - 8, 10, "top")
    ref = V.eer(ref_cosine(values, ids, trials, 8 + top), trials.target)
    assert ref == pytest.approx(V.neuron_eer(values, ids, layers, trials, probe_values, probe_spk, layer="L1",
                                             probe_factory=logistic_factory, percentages=(25,)).subset(25).eer_top)
    row = res.table4_row()
    assert row["Lb"] == "L1" and row["Neu_t"] == res.minimal_percent
    back = V.NeuronVerification.from_dict(json.loads(res.to_json()))
    assert back == res
    full = V.VerificationResult(V.layerwise_eer(values, ids, layers, trials), res)
    assert V.VerificationResult.from_json(full.to_json()) == full


def test_neuron_eer_bad_input(monkeypatch):
    informative = np.arange(10)
    values, spk = planted_layer(6, 4, 0, informative)
    ids = [f"e{i}" for i in range(len(spk))]
    probe_values, probe_spk = planted_layer(4, 4, 1, informative)
    trials = V.make_trials(ids, spk, seed=0)
    layers = {"other": (0, 8), "L1": (8, 48)}
    kw = dict(probe_factory=logistic_factory, percentages=(50,))
    with pytest.raises(ValueError, match="other speakers"):
        V.neuron_eer(values, ids, layers, trials, probe_values, list(spk[: len(probe_spk)]), speakers=dict(zip(ids, spk)), **kw)
    with pytest.raises(ValueError, match="both train the probe"):
        V.neuron_eer(values, ids, layers, trials, probe_values, probe_spk, probe_ids=ids[: len(probe_spk)], **kw)
    with pytest.raises(ValueError, match="unknown layer"):
        V.neuron_eer(values, ids, layers, trials, probe_values, probe_spk, layer="L9", **kw)
    with pytest.raises(ValueError, match=r"\(M, 48\)"):
        V.neuron_eer(values, ids, layers, trials, probe_values[:, :10], probe_spk, **kw)
    monkeypatch.setattr(neurohook, "LinearProbe", None, raising=False)
    monkeypatch.setitem(sys.modules, "neurohook.probe", None)
    with pytest.raises(ValueError, match="probe_factory"):
        V.neuron_eer(values, ids, layers, trials, probe_values, probe_spk, percentages=(50,))
