"""Evidence bundle: built from existing JSON only, every file hashed, every table number traceable to its source;
verification fails on one changed byte (naming the file) and on an edited table number (naming table, row,
column and source)."""

import json
import shutil
from pathlib import Path

import pytest

from husai import bundle as B
from husai import tables as T
from husai.config import load_yaml
from husai.io import sha256_file
from husai.provenance import config_hash

STATS = ("pwmcc", "matched_mcc", "shared_fraction")


def tiny_config(repo: Path) -> dict:
    cfg = load_yaml(repo / "tests" / "data" / "tiny_config.yaml")
    cfg["policy"] = str(repo / "config" / "policy.yaml")
    return cfg


def _write(root: Path, rel: str, doc) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1) if not isinstance(doc, str) else doc)


def make_results(root: Path, cfg: dict) -> Path:
    """A results tree in the workflow's layout and schemas, with made-up numbers (a test fixture)."""
    paths = B.study_paths(cfg)
    prov = {"config_hash": config_hash(cfg), "git_sha": "test", "device": "cpu (test)", "packages": {"x": "1"}}
    seeds = cfg["sae"]["seeds"]
    for i, key in enumerate(paths["conditions"]):
        for s, rel in zip(seeds, paths["seed_metrics"][key], strict=True):
            _write(root, rel, {"explained_variance": 0.9 + 0.01 * i + 0.001 * s, "l0": 4.0 + i * 3 + 0.1 * s,
                               "dead_fraction": 0.1 + 0.01 * s, "condition": key.split("/")[1], "key": key,
                               "seed": s, "provenance": prov})
        stats = {}
        for k, name in enumerate(STATS):
            m = 0.5 + 0.1 * i - 0.05 * k
            stats[name] = {
                "trained": {"mean": m, "pairwise": [[1.0 if a == b else m for b in seeds] for a in seeds],
                            "interval": {"low": m - 0.02, "high": m + 0.02, "method": "seed bootstrap"}},
                "chance_gaussian": {"mean": 0.2, "low": 0.19, "high": 0.21},
                "chance_untrained_init": {"mean": 0.21, "low": 0.2, "high": 0.22},
                "chance_reference": "untrained_init",
                "delta_vs_chance": {"point": m - 0.21, "lcb": m - 0.25, "method": "bootstrap"},
                "permutation": {"p_value": 0.004}}
        _write(root, paths["consistency"][key], {"statistics": stats, "seeds": seeds, "n_seeds": len(seeds),
                                                 "condition": key.split("/")[1], "key": key, "provenance": prov})
    _write(root, paths["model_metrics"], {"train_accuracy": 1.0, "heldout_accuracy": 0.995,
                                          "fourier_concentration": 0.9, "provenance": prov})
    for q in paths["qc"]:
        _write(root, q, {"n_rows": 529, "d": 32, "nan_count": 0, "thresholds_passed": True, "provenance": prov})
    conds = paths["conditions"]
    inputs = {f"results/{p.relative_to(root).as_posix()}": sha256_file(p) for p in sorted(root.rglob("*.json"))}
    release = {
        "policy_id": "test", "policy_version": 1, "run_id": f"tiny-{config_hash(cfg)[:8]}-test", "candidate": conds[0],
        "decision": "iterate", "severity": "SEV2", "pass_all": False, "failed_checks": [],
        "gates": [{"gate": "reconstruction", "required": True, "status": "fail", "pass": False, "value": 0.9,
                   "threshold": 0.8, "basis": "lcb", "reason": "dead_fraction | too high & more",
                   "checks": [{"name": "explained_variance", "value": 0.9, "threshold": 0.8, "comparison": ">=",
                               "basis": "lcb", "pass": True},
                              {"name": "dead_fraction", "value": 0.3, "threshold": 0.2, "comparison": "<=",
                               "basis": "ucb", "pass": False}]},
                  {"gate": "splice", "required": False, "status": "skipped", "pass": None, "reason": "no evidence"}],
        "multiple_testing": {"conditions": conds, "statistic": "pwmcc", "p_adjusted": [0.004] * len(conds)},
        "inputs": inputs, "provenance": prov}
    _write(root, paths["release"], release)
    _write(root, paths["release_md"], "# Release policy: ITERATE\n")
    return root


def guard_against_compute(monkeypatch):
    """Building a bundle must not train, resample or estimate: make every such function explode."""
    import husai.consistency
    import husai.stats
    import husai.training

    def boom(*a, **k):
        raise AssertionError("the evidence bundle computed something")

    for mod, names in ((husai.stats, ("seed_bootstrap", "lcb_difference_vs_chance", "permutation_pvalue", "mean_ci",
                                      "lcb_mean")),
                       (husai.consistency, ("pairwise_matrices", "chance_values")),
                       (husai.training, ("train_seed_batched",))):
        for n in names:
            if hasattr(mod, n):
                monkeypatch.setattr(mod, n, boom)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    repo = Path(__file__).resolve().parents[1]
    cfg = tiny_config(repo)
    results = make_results(tmp_path_factory.mktemp("study") / "results", cfg)
    cfg_file = results.parent / "config.yaml"
    cfg_file.write_text(json.dumps(cfg))
    with pytest.MonkeyPatch.context() as mp:
        guard_against_compute(mp)
        out = B.build_bundle(results, cfg, cfg["policy"], cfg_file)
    return {"repo": repo, "cfg": cfg, "results": results, "bundle": out, "cfg_file": cfg_file}


@pytest.fixture
def copy(built, tmp_path):
    """A copy of the study (results + bundle) that a test may damage."""
    dst = tmp_path / "results"
    shutil.copytree(built["results"], dst)
    return dst, dst / "evidence" / built["bundle"].name


def test_fresh_bundle_verifies_and_holds_everything(built):
    out, results = built["bundle"], built["results"]
    assert out == results / "evidence" / out.name and out.name.startswith("tiny-")
    assert B.verify_bundle(out) == []  # the default results dir is the one holding the bundle
    assert B.verify_bundle(out, out / "sources") == []  # self-contained: the source copies inside the bundle
    manifest = json.loads((out / B.MANIFEST).read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {B.MANIFEST}
    assert set(manifest["files"]) == on_disk
    keys = B.study_paths(built["cfg"])["conditions"]
    for name in ["trained_vs_chance", "frontier", "lcb_forest", *(f"pairwise_{B.figure_stem(k)}" for k in keys)]:
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, name
        assert (out / "figures" / f"{name}.pdf").read_bytes().startswith(b"%PDF"), name
    for name in ("reconstruction", "consistency", "gates", "verdict", "model_and_data"):
        for fmt in T.FORMATS:
            assert (out / "tables" / f"{name}.{fmt}").is_file(), (name, fmt)
    for rel in ("release_policy.json", "release_policy.md", "environment.json", "config/config.resolved.json",
                "config/policy.yaml", "config/config.yaml", "README.md"):
        assert (out / rel).is_file(), rel
    env = json.loads((out / "environment.json").read_text())
    assert env["bundle_built_with"]["packages"]["matplotlib"] and "cpu_count" in env["bundle_built_with"]
    assert env["results_computed_with"][0]["git_sha"] == "test"
    # evidence that does not exist yet is a note, never a figure
    assert {a["kind"] for a in manifest["evidence"]["absent"]} == set(B.OPTIONAL_EVIDENCE)
    assert not list((out / "figures").glob("canary*")) and not list((out / "tables").glob("evidence_*"))
    # no temporary folders left beside the bundle
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_every_table_number_names_its_source(built):
    out = built["bundle"]
    manifest = json.loads((out / B.MANIFEST).read_text())
    load = T.make_loader(built["results"])
    rec = manifest["tables"]["reconstruction"]
    ev_mean = rec["rows"][0][rec["columns"].index("explained_variance_mean")]["source"]
    assert ev_mean["op"] == "mean" and len(ev_mean["items"]) == len(built["cfg"]["sae"]["seeds"])
    vals = [load(i["file"])["explained_variance"] for i in ev_mean["items"]]
    assert T.cell_value({"source": ev_mean}, load) == pytest.approx(sum(vals) / len(vals), abs=1e-15)
    cons = manifest["tables"]["consistency"]
    cell = cons["rows"][0][cons["columns"].index("delta_lcb")]["source"]
    assert cell["file"].endswith("consistency.json") and cell["pointer"] == "/statistics/pwmcc/delta_vs_chance/lcb"
    csv_rows = T.parse((out / "tables/consistency.csv").read_text(), "csv")
    assert float(csv_rows[1][cons["columns"].index("delta_lcb")]) == resolve_cell(load, cell)
    gates_md = (out / "tables/gates.md").read_text()
    assert "dead_fraction \\| too high & more" in gates_md  # a pipe in a reason stays inside its cell
    assert "skipped" in gates_md


def resolve_cell(load, source):
    return T.resolve(load(source["file"]), source["pointer"])


def test_one_changed_byte_fails_naming_the_file(copy):
    _, out = copy
    png = out / "figures" / "frontier.png"
    raw = bytearray(png.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    png.write_bytes(bytes(raw))
    problems = B.verify_bundle(out)
    assert len(problems) == 1 and "figures/frontier.png" in problems[0] and "sha256 mismatch" in problems[0]


def test_edited_table_number_fails_naming_table_row_and_source(copy):
    _, out = copy
    csv = out / "tables" / "consistency.csv"
    rows = T.parse(csv.read_text(), "csv")
    col = rows[0].index("trained_mean")
    old = rows[2][col]
    csv.write_text(csv.read_text().replace(old, repr(float(old) + 0.01), 1))
    problems = B.verify_bundle(out)
    assert any("sha256 mismatch: tables/consistency.csv" in p for p in problems)
    edit = [p for p in problems if p.startswith("table tables/consistency.csv")]
    assert len(edit) == 1
    assert "row 2" in edit[0] and "column trained_mean" in edit[0] and "matched_mcc" in edit[0]
    assert "consistency.json#/statistics/matched_mcc/trained/mean" in edit[0]


def test_edited_markdown_and_latex_cells_are_caught(copy):
    _, out = copy
    md, tex = out / "tables" / "verdict.md", out / "tables" / "verdict.tex"
    md.write_text(md.read_text().replace("| iterate |", "| promote |"))
    tex.write_text(tex.read_text().replace("SEV2", "SEV4"))
    problems = B.verify_bundle(out)
    assert any("tables/verdict.md" in p and "column value" in p and "release_policy.json#/decision" in p
               for p in problems)
    assert any("tables/verdict.tex" in p and "release_policy.json#/severity" in p for p in problems)


def test_missing_unlisted_files_and_changed_sources_fail(copy):
    results, out = copy
    (out / "tables" / "gates.csv").unlink()
    (out / "notes.txt").write_text("not from the bundle")
    qc = next(results.glob("activations/**/qc.json"))
    qc.write_text(qc.read_text().replace('"n_rows": 529', '"n_rows": 530'))
    problems = "\n".join(B.verify_bundle(out))
    assert "qc.json differs from the sha256 release_policy.json recorded for it" in problems
    assert "missing file: tables/gates.csv" in problems
    assert "unlisted file: notes.txt" in problems
    assert "source changed since the bundle was built" in problems and "qc.json" in problems
    assert "column value: found '529', but the source activations/" in problems


def test_bundle_refuses_a_config_that_did_not_produce_the_results(built, tmp_path):
    cfg = json.loads(json.dumps(built["cfg"]))
    cfg["consistency"]["tau"] = 0.5
    with pytest.raises(B.BundleError, match="config hash"):
        B.build_bundle(built["results"], cfg, cfg["policy"], built["cfg_file"], tmp_path / built["bundle"].name)


def test_bundle_refuses_evidence_newer_than_the_verdict(built, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(built["results"], results, ignore=shutil.ignore_patterns("evidence"))
    victim = next(results.glob("saes/**/seed2/metrics.json"))
    victim.write_text(victim.read_text().replace('"l0": ', '"l0": 1'))
    with pytest.raises(B.BundleError, match=r"seed2/metrics.json differs from the sha256 release_policy.json"):
        B.build_bundle(results, built["cfg"], built["cfg"]["policy"], built["cfg_file"])


def test_bundle_refuses_missing_evidence(built, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(built["results"], results, ignore=shutil.ignore_patterns("evidence"))
    victim = next(results.glob("saes/**/seed1/metrics.json"))
    victim.unlink()
    with pytest.raises(B.BundleError, match="seed1/metrics.json"):
        B.build_bundle(results, built["cfg"], built["cfg"]["policy"], built["cfg_file"])
    assert not (results / "evidence").exists() or not any((results / "evidence").iterdir())


def test_optional_evidence_is_drawn_and_tabulated_when_present(built, tmp_path, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(built["results"], results, ignore=shutil.ignore_patterns("evidence"))
    canary = {"per_platform": {"pocl:cpu": {"kind": "pocl", "usable": True, "sizes": {
        "1400": {"gflops_avg": 12.5}, "2048": {"gflops_avg": 14.0}}}}, "provenance": {"git_sha": "t"}}
    _write(results, "platform/canary_metrics.json", canary)
    key = B.study_paths(built["cfg"])["conditions"][0]
    _write(results, f"lanes/m/{key}/splice.json", {"lane": "splice", "clean_accuracy": 1.0,
                                                   "spliced_accuracy": 0.97, "mcnemar_p": 0.01})
    _write(results, f"lanes/m/{key}/probes.json", {"lane": "probes", "folds": [{"auc": 0.9}, {"auc": 0.8}]})
    guard_against_compute(monkeypatch)
    out = B.build_bundle(results, built["cfg"], built["cfg"]["policy"], built["cfg_file"])
    manifest = json.loads((out / B.MANIFEST).read_text())
    assert set(manifest["evidence"]["present"]) == {"canary", "splice", "probes"}
    assert (out / "figures" / "canary_throughput.png").is_file()
    assert "spliced_accuracy" in (out / "tables" / "evidence_splice.md").read_text()
    assert "/folds/1/auc" in (out / "tables" / "evidence_probes.csv").read_text()
    assert {a["kind"] for a in manifest["evidence"]["absent"]} == {"stress", "external"}
    assert B.verify_bundle(out) == []
    # rebuilding replaces the bundle in place, leaving nothing beside it, with the same bytes (the pairwise PDFs
    # come from husai.consistency_report, whose PDF still carries a creation date)
    assert B.build_bundle(results, built["cfg"], built["cfg"]["policy"], built["cfg_file"]) == out
    assert [p.name for p in (results / "evidence").iterdir()] == [out.name]
    again = json.loads((out / B.MANIFEST).read_text())
    changed = {k for k, v in again["files"].items() if manifest["files"].get(k) != v}
    assert all(k.startswith("figures/pairwise_") and k.endswith(".pdf") for k in changed), changed


@pytest.mark.parametrize("value", [0.1 + 0.2, 1e-300, 12345678.9, -0.0, 3, True, None, "a|b & c_d {x} ~^\\ ±",
                                   ["reason | one"], float("nan")])
def test_render_parse_roundtrip(value):
    spec = {"title": "t", "columns": ["key", "value"], "rows": []}
    texts = T.write_formats(spec, [["k", value]])
    for fmt in T.FORMATS:
        assert T.parse(texts[fmt], fmt) == [["key", "value"], ["k", T.render(value, fmt)]], fmt
    if isinstance(value, float) and value == value:
        assert float(T.parse(texts["csv"], "csv")[1][1]) == value  # CSV keeps full precision
