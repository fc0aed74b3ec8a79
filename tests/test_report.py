"""The report: tables and figures written from a real (small) results.json, numbers read back and compared."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from neurohook import report, verification as V
from neurohook.atomic import atomic_open
from neurohook.analysis import analyze
from neurohook.features import Features, LayerSpan
from neurohook.probe import LinearProbe

PROBE = dict(lr=3e-2, epochs=5)
WIDTH = 16
N_SPK = 16
PNG = b"\x89PNG\r\n\x1a\n"



def planted(seed: int, layers: int, speaker: bool, n: int = 200) -> tuple[Features, list[str], np.ndarray]:
    """Noise with gender in every layer, channel in L1, language (and dialect, speaker) in the last layer;
    language clearly enough that its test interval clears the lower layers' accuracies with 16 speakers."""
    rng = np.random.default_rng(seed)
    spk = np.arange(n) % N_SPK
    chan = rng.integers(0, 3, n)
    X = rng.standard_normal((n, layers * WIDTH)).astype(np.float32)
    for i in range(layers):
        X[:, i * WIDTH : i * WIDTH + 3] += 2.0 * (spk % 2)[:, None]
    X[:, 3:6] += 1.5 * np.eye(3)[chan]
    last = (layers - 1) * WIDTH
    X[:, last + 3 : last + 9] += 3.0 * np.eye(3)[spk % 3].repeat(2, 1)
    X[:, last + 9 : last + 13] += 2.0 * np.eye(4)[spk % 4]
    if speaker:
        X[:, last:] += 2.0 * rng.standard_normal((N_SPK, WIDTH)).astype(np.float32)[spk]
    spans = [LayerSpan(f"L{i + 1}", i * WIDTH, (i + 1) * WIDTH, "mean") for i in range(layers)]
    ids = [f"u{i:04d}" for i in range(n)]
    return Features(X, ids, spans), ids, spk


def model_entry(F: Features, analysis: dict, verification: dict) -> dict:
    return {"n_neurons": F.values.shape[1], "layers": F.layer_names,
            "layer_sizes": [len(F.columns(n)) for n in F.layer_names],
            "analysis": analysis, "verification": verification}


def sv(F: Features, ids: list[str], spk: np.ndarray, neurons: bool) -> V.VerificationResult:
    """Layer-wise EER on speakers 0-7; with neurons, Table 4 with a probe trained on speakers 8-15."""
    test = spk < N_SPK // 2
    tid = [u for u, t in zip(ids, test) if t]
    trials = V.make_trials(tid, spk[test].astype(str), n_target=100, seed=0)
    if not neurons:
        return V.evaluate(F.select_ids(tid), trials)
    pid = [u for u, t in zip(ids, test) if not t]
    return V.evaluate(F.select_ids(tid), trials, probe_features=F.select_ids(pid), probe_speakers=spk[~test].astype(str),
                      percentages=(5, 25, 50), tolerance=0.5,
                      probe_factory=lambda s: LinearProbe(epochs=5, lr=3e-2, seed=s))


@pytest.fixture(scope="module")
def results() -> dict:
    """Two models: 'cnn-sre' (4 tasks, R.INIT, SV with Table 4 on EN) and 'st-small' (3 tasks, SV layer-wise only)."""
    out = {"neurohook_version": "test", "models": {}}
    F, ids, spk = planted(0, 3, speaker=True)
    R = Features(np.random.default_rng(7).standard_normal(F.values.shape).astype(np.float32), ids, F.layers)
    labels = {"GC": spk % 2, "LID": spk % 3, "DID": spk % 4, "CC": np.asarray(F.values[:, 3:6].argmax(1))}
    res = analyze(F, labels, speakers=spk.astype(str), rinit_features=R, seeds=(0, 1), percentages=(5, 25, 50), **PROBE)
    out["models"]["cnn-sre"] = model_entry(F, res.to_dict(), {"EN": sv(F, ids, spk, True).to_dict(),
                                                              "ZH": sv(F, ids, spk, False).to_dict()})
    F2, ids2, spk2 = planted(1, 2, speaker=False)
    labels2 = {"GC": spk2 % 2, "LID": spk2 % 3, "CC": np.asarray(F2.values[:, 3:6].argmax(1))}
    res2 = analyze(F2, labels2, speakers=spk2.astype(str), seeds=(0, 1), percentages=(5, 25, 50), **PROBE)
    out["models"]["st-small"] = model_entry(F2, res2.to_dict(), {"EN": sv(F2, ids2, spk2, False).to_dict()})
    return json.loads(json.dumps(out))  # exactly what a results.json holds


@pytest.fixture(scope="module")
def written(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    path = report.write_report(results, out)
    assert path == out / "report.md"
    return out


# ------------------------------------------------------------------------------------------------
# Reading the report back


def md_tables(text: str) -> dict[str, list[list[str]]]:
    """Markdown tables keyed by the heading above each: header row first, separator dropped."""
    tables: dict[str, list[list[str]]] = {}
    title, current = None, None
    for line in text.splitlines():
        if line.startswith("#"):
            title, current = line.lstrip("#").strip(), None
        elif line.startswith("|"):
            cells = [c.strip().replace("\\|", "|").replace("\\\\", "\\") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if current is None:
                assert title not in tables, f"two tables titled {title!r}"
                current = tables[title] = []
            if not all(re.fullmatch(r"-+", c) for c in cells):
                current.append(cells)
        else:
            current = None
    return tables


class _HTMLTables(HTMLParser):
    """<h4> titles and the cell texts of each <table> that follows."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.title = ""
        self._text: list[str] | None = None
        self._rows: list[list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("h4", "td", "th"):
            self._text = []
        elif tag == "table":
            self._rows = self.tables[self.title] = []
        elif tag == "tr":
            self._rows.append([])

    def handle_endtag(self, tag):
        if tag == "h4":
            self.title = "".join(self._text)
        elif tag in ("td", "th"):
            self._rows[-1].append("".join(self._text))
        if tag in ("h4", "td", "th"):
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def html_tables(text: str) -> dict[str, list[list[str]]]:
    p = _HTMLTables()
    p.feed(text)
    return p.tables


def rows_of(table: list[list[str]]) -> dict[str, list[str]]:
    return {r[0]: r[1:] for r in table[1:]}


def as_pct(cell: str) -> float:
    """The value of a cell "12.34" or "12.34 [10.00, 14.00]" (its interval left aside)."""
    return float(cell.split(" [")[0])


def expected(frac: float) -> float:
    return round(frac * 100, 2)


# ------------------------------------------------------------------------------------------------
# Tests


def test_files_are_written_and_figures_are_pngs(written):
    md = (written / "report.md").read_text()
    assert (written / "report.html").stat().st_size > 0
    referenced = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md))
    pngs = {p.name for p in written.glob("*.png")}
    assert referenced == pngs
    for kind in ("layers_GC", "layers_DID", "eer_cnn-sre", "eer_st-small", "prefix_LID", "distribution_cnn-sre",
                 "overlap_st-small"):
        assert f"{kind}.png" in pngs
    for name in pngs:
        data = (written / name).read_bytes()
        assert len(data) > 100 and data.startswith(PNG)
    assert sorted(p.name for p in written.iterdir()) == sorted(pngs | {"report.md", "report.html"})  # no temp files


def test_tables_1_2_3_equal_results(written, results):
    tables = md_tables((written / "report.md").read_text())
    models = results["models"]
    checked = gated = 0
    for task in ("GC", "LID", "DID", "CC"):
        have = [m for m in models if task in models[m]["analysis"]["tasks"]]
        t1, t2, t3 = (tables[f"Table {k} — {task}"] for k in (1, 2, 3))
        for table in (t1, t2, t3):
            assert table[0][1:] == have
        r1, r2, r3 = rows_of(t1), rows_of(t2), rows_of(t3)
        for i, m in enumerate(have):
            r = models[m]["analysis"]["tasks"][task]
            assert r1["#Neurons"][i] == str(models[m]["n_neurons"])
            assert r1["labels#"][i] == str(len(r["classes"]))
            for label, key in (("Acc (Maj-C)", "majority"), ("Acc (ALL)", "oracle"), ("Sel_a", "selectivity")):
                assert as_pct(r1[label][i]) == pytest.approx(expected(r[key]["mean"]), abs=1e-9)
                checked += 1
            if r["rinit"] is None:
                assert r1["Acc (R.INIT)"][i] == "n/a"
            else:
                assert as_pct(r1["Acc (R.INIT)"][i]) == pytest.approx(expected(r["rinit"]["mean"]), abs=1e-9)
            assert float(r2["Neurons"][i].rstrip("%")) == r["ablation_percent"]
            for label, key in (("Acc_t (Masked)", "top"), ("Acc_b (Masked)", "bottom"), ("Acc_r (Masked)", "random")):
                assert as_pct(r2[label][i]) == pytest.approx(expected(r["masked"][key]["mean"]), abs=1e-9)
                checked += 1
            assert as_pct(r3["Acc (ALL)"][i]) == pytest.approx(expected(r["oracle"]["mean"]), abs=1e-9)
            if not r["informative"]:  # gated: Acc(ALL)'s interval not above the majority rate, no minimal set
                assert r["oracle"]["ci"][0] <= r["majority"]["mean"] and r["minimal_percent"] is None
                assert r3["Neu_t"][i] == "not informative" and r3["Acc_t (Re-trained)"][i] == "n/a"
                gated += 1
                continue
            assert float(r3["Neu_t"][i].rstrip("%")) == pytest.approx(r["minimal_percent"]["mean"], rel=1e-5)
            assert as_pct(r3["Acc_t (Re-trained)"][i]) == pytest.approx(expected(r["minimal_accuracy"]["mean"]), abs=1e-9)
            assert as_pct(r3["Acc_r (Re-trained)"][i]) == pytest.approx(
                expected(r["minimal_random_accuracy"]["mean"]), abs=1e-9)
            assert r3["Minimal set reached"][i] == f"{sum(r['minimal_reached'])}/{len(r['seeds'])} seeds"
            checked += 4
    assert models["cnn-sre"]["analysis"]["tasks"]["GC"]["rinit"] is not None  # both R.INIT branches were checked
    assert checked + 4 * gated == 7 * 10  # 7 task-model pairs, 10 numbers each (6 of a gated one)


def test_tables_4_5_7_and_a8_equal_results(written, results):
    tables = md_tables((written / "report.md").read_text())
    models = results["models"]
    t4 = tables["Table 4 — SV (EN)"]
    assert t4[0] == ["Model", "Lb", "EER(Lb)", "EER(ALL)", "Neu_t", "EER_t", "EER_r", "EER_b"]
    rows = rows_of(t4)
    nv = models["cnn-sre"]["verification"]["EN"]["neurons"]
    assert rows["cnn-sre"][0] == nv["layer"]
    assert as_pct(rows["cnn-sre"][1]) == pytest.approx(expected(nv["eer_layer"]), abs=1e-9)
    sub = next(s for s in nv["subsets"] if s["percent"] == nv["minimal_percent"])
    assert float(rows["cnn-sre"][3].rstrip("%")) == nv["minimal_percent"]
    assert [as_pct(c) for c in rows["cnn-sre"][4:]] == pytest.approx(
        [expected(sub[k]) for k in ("eer_top", "eer_random", "eer_bottom")], abs=1e-9)
    lw = models["st-small"]["verification"]["EN"]["layerwise"]
    best = next(e for e in lw["layers"] if e["name"] == lw["best_layer"])
    assert rows["st-small"][:2] == [lw["best_layer"], f"{100 * best['eer']:.2f}"]
    assert rows["st-small"][3:] == ["not measured"] * 4
    assert "Table 4 — SV (ZH)" in tables

    dist = tables["Tables 5-7 — cnn-sre"]
    n = models["cnn-sre"]["n_neurons"]
    for row in dist[1:]:
        task = row[0].split()[0]
        r = models["cnn-sre"]["analysis"]["tasks"][task]
        if not r["informative"]:
            assert row[0] == f"{task} (not informative)" and set(row[1:]) == {"n/a"}
            continue
        for cell, layer in zip(row[1:-1], r["layers"]):
            count, share = re.fullmatch(r"([\d.]+) \(([\d.]+)%\)", cell).groups()
            mean = r["distribution"][layer]["mean"]
            assert float(count) == round(mean, 1) and float(share) == round(100 * mean / n, 1)

    a8 = rows_of(tables["Table A.8"])
    std = models["st-small"]["analysis"]["tasks"]["LID"]["oracle"]["std"]
    assert a8["LID"][2] == f"± {100 * std:.2f} (2 seeds)"  # points, like every accuracy
    assert a8["DID"][2] == "n/a"  # st-small has no DID


def test_html_holds_the_same_tables(written):
    md = md_tables((written / "report.md").read_text())
    page = (written / "report.html").read_text()
    assert html_tables(page) == md
    for name in re.findall(r'<img src="([^"]+)"', page):
        assert (written / name).is_file()


def test_findings_follow_the_rules(written, results):
    rows = rows_of(md_tables((written / "report.md").read_text())["Findings — the paper beside this run"])
    voice = next(v for k, v in rows.items() if "Voice identity" in k)
    assert "cnn-sre (by its name)" in voice[1]  # the model named like the paper's speaker model
    lb = results["models"]["cnn-sre"]["verification"]["EN"]["layerwise"]["best_layer"]
    assert lb == "L3" and voice[2] == "agrees"  # speaker information was planted in its last layer only
    lang = next(v for k, v in rows.items() if k.startswith("Language"))
    assert [results["models"][m]["analysis"]["tasks"]["LID"]["best_layer"] for m in ("cnn-sre", "st-small")] == ["L3", "L2"]
    assert lang[2] == "agrees"
    for k, v in rows.items():  # measured, or "not measured" with the reason (a task at chance is not studied)
        assert v[2] in ("agrees", "agrees (most)", "partly", "differs") or (v[2] == "not measured" and "not informative" in v[1]), (k, v)


def test_missing_parts_do_not_crash(results, tmp_path):
    """One oddly named model, no SV, no R.INIT, a single seed, only GC and CC: 'not measured' where needed."""
    F, ids, spk = planted(2, 2, speaker=False, n=120)
    res = analyze(F, {"GC": spk % 2, "CC": np.asarray(F.values[:, 3:6].argmax(1))}, speakers=spk.astype(str),
                  seeds=(0,), percentages=(25, 50), **PROBE)
    name = 'cnn <b>&"x|y"'
    data = {"neurohook_version": "test",
            "models": {name: {"n_neurons": 32, "layers": F.layer_names, "layer_sizes": [16, 16],
                              "analysis": res.to_dict()}}}  # no "verification" key at all
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    out = report.write_report(str(path), tmp_path / "rep")
    md = out.read_text()
    tables = md_tables(md)
    assert tables["Table 1 — GC"][0] == ["", name]
    assert rows_of(tables["Table 1 — GC"])["Acc (R.INIT)"] == ["n/a"]
    assert "Table 1 — LID" not in tables and not any(t.startswith("Table 4") for t in tables)
    assert "(1 seeds)" in rows_of(tables["Table A.8"])["GC"][1]
    rows = rows_of(tables["Findings — the paper beside this run"])
    for start in ("Voice identity", "Language", "Regional dialect", "Dialect information", "Simple properties"):
        assert next(v for k, v in rows.items() if k.startswith(start))[1:] == ["not measured", "not measured"]
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<b>&amp;" not in page and "&lt;b&gt;&amp;&quot;x|y&quot;" in page
    assert html_tables(page) == tables
    assert not list((tmp_path / "rep").glob(".*"))

    empty = report.write_report({"models": {}}, tmp_path / "empty")  # nothing at all
    assert "holds no model" in empty.read_text()


def test_path_input_and_rewrite(results, tmp_path):
    """A path to results.json is read; a second report over the first replaces it (a small one: GC of st-small)."""
    one = copy.deepcopy(results)
    one["models"].pop("cnn-sre")
    tasks = one["models"]["st-small"]["analysis"]["tasks"]
    for task in ("LID", "CC"):
        tasks.pop(task)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(one))
    report.write_report(path, tmp_path / "rep")
    first = (tmp_path / "rep" / "report.md").read_text()
    one["models"]["renamed"] = one["models"].pop("st-small")
    report.write_report(one, tmp_path / "rep")  # rewrites in place
    second = (tmp_path / "rep" / "report.md").read_text()
    assert "| st-small |" in first and "st-small" not in second and "| renamed |" in second
    assert not list((tmp_path / "rep").glob(".*"))


def test_bad_results_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="models"):
        report.write_report({"tasks": {}}, tmp_path)
    with pytest.raises(ValueError, match="'m'"):
        report.write_report({"models": {"m": {"analysis": {"tasks": {"GC": {"task": "GC"}}}}}}, tmp_path)


def test_atomic_write_keeps_the_old_file_and_no_temp_on_failure(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")

    with pytest.raises(OSError, match="disk full"):
        with atomic_open(target, "w") as f:  # the writer every report file goes through
            f.write("half")
            raise OSError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
