"""`modex export --format onnx` against the real references (issue 2, "What it must show").

For every fixture (tests/oracle/zoo_fixtures.py: real torch.save checkpoints and PyTorch's logits),
export with the binary in $MODEX_BIN, then run the .onnx in ONNX Runtime (one Node process for
the whole file) at batch 1 and 4, and require max|diff| <= 1e-4 * max|logit| + 1e-5. Also: the
ONNX checker and strict shape inference (python onnx), input/output names and dims (dynamic by
default, fixed with --static), opset, metadata_props, the --json report and the sidecar.

    MODEX_BIN=build/modex /usr/bin/python3 -m pytest -q tests/oracle/test_onnx_export.py
"""
import concurrent.futures
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle_util as ou  # noqa: E402
import zoo_fixtures as zf  # noqa: E402

import onnx  # noqa: E402  (Debian's python3-onnx; missing is an error, never a skip)

SPECS = {s["name"]: s for s in zf.all_specs()}
ARCHS = zf.zoo_archs()
# Checkpoint B of each architecture is exported with an explicit opset, alternating 17 and 13
# (so both mobilenet_v3s, whose hardswish lowering depends on the opset, see both).
OPSET_B = {arch: (17 if i % 2 == 0 else 13) for i, arch in enumerate(ARCHS)}
STATIC_A = ["resnet18", "efficientnet_b0", "mobilenet_v3_small"]
OPSET_SWEEP = [12, 13, 14, 15, 16, 17]  # on mobilenet_v3_small-a (opset 11 is its plain export)


def _default_stems(filename):
    """The contract says STEM defaults to "the checkpoint's file stem": std::filesystem's stem
    drops the last extension only (x.pth.tar -> x.pth); dropping all (-> x) is accepted too."""
    stems = [Path(filename).stem, filename.split(".")[0]]
    return list(dict.fromkeys(stems))


# The architectures' own evaluation sizes (the paper's, and torchvision's weights' crop size where
# it differs: b2 is 260 in the paper, 288 in torchvision). With neither --input-size nor a config
# the contract does not say which size goes into the metadata: 224 or the architecture's own.
NATIVE_SIZES = {"efficientnet_b1": [240], "efficientnet_b2": [260, 288],
                "efficientnet_b3": [300], "efficientnet_b4": [380], "efficientnet_b5": [456],
                "efficientnet_b6": [528], "efficientnet_b7": [600]}


def _default_sizes(arch):
    return sorted({224, *NATIVE_SIZES.get(arch, [])})


def _export_plan():
    """Every export the tests make: id -> {fixture, args, opset, static, input_sizes, runs, stems}."""
    plan = {}

    def add(eid, fixture, args=(), opset=11, static=False, input_size=None, runs=None, stem=None):
        spec = SPECS[fixture]
        size = input_size or spec["expect"].get("metadata_input_size")
        plan[eid] = dict(id=eid, fixture=fixture, args=list(args), opset=opset, static=static,
                         input_sizes=[size] if size else _default_sizes(spec["arch"]),
                         runs=runs or list(spec["runs"]),
                         stems=[stem] if stem else _default_stems(spec["checkpoint"]))

    for arch in ARCHS:
        add(f"{arch}-a", f"zoo-{arch}-a")  # all defaults: opset 11, dynamic, no --input-size
        add(f"{arch}-b", f"zoo-{arch}-b",
            ["--opset", OPSET_B[arch], "--input-size", zf.SIZE_B], opset=OPSET_B[arch],
            input_size=zf.SIZE_B)
    for arch in STATIC_A:
        add(f"{arch}-a-static", f"zoo-{arch}-a", ["--static"], static=True, runs=["b1"])
    add("mobilenet_v2-b-static", "zoo-mobilenet_v2-b", ["--static", "--input-size", zf.SIZE_B],
        static=True, input_size=zf.SIZE_B, runs=["b1"])
    for opset in OPSET_SWEEP:
        add(f"mobilenet_v3_small-a-opset{opset}", "zoo-mobilenet_v3_small-a",
            ["--opset", opset], opset=opset, runs=["b1", "b4"])
    add("mobilenet_v3_large-a-opset14", "zoo-mobilenet_v3_large-a", ["--opset", 14], opset=14,
        runs=["b1", "b4"])
    add("resnet18-a-overrides", "zoo-resnet18-a",
        ["--arch", "resnet18", "--num-classes", 10, "--name", "renamed"], stem="renamed",
        runs=["b1"])
    for name, spec in SPECS.items():
        if spec["kind"] == "variant":
            add(name[len("variant-"):], name)
    return plan


PLAN = _export_plan()


# A complete torchvision model (classifier included) held under `backbone.`: the contract does not
# say whether that is a prefix to strip (wrapper null) or a wrapper; both are accepted.
WRAPPER_EITHER = {"prefix_backbone"}


def _expected_stdout_keys():
    return {"architecture", "num_classes", "input_size", "wrapper", "outputs", "sidecar", "seconds"}


@pytest.fixture(scope="module")
def exported():
    """Generates missing fixtures, runs every export (2 at a time), then every ORT job in one
    Node process. Yields {"root", "work", "exports": id -> record, "ort": job id -> result}."""
    t0 = time.time()
    root = zf.ensure({p["fixture"] for p in PLAN.values()})
    t_fixtures = time.time() - t0
    ou.modex_bin()  # fail early and clearly when the binary is missing
    work = ou.WorkDir("modex-oracle-onnx-")

    def export(p):
        spec = SPECS[p["fixture"]]
        out_dir = work.path / p["id"]
        out_dir.mkdir()
        ckpt = zf.case_dir(p["fixture"], root) / spec["checkpoint"]
        args = ["export", "--checkpoint", ckpt, "--format", "onnx", "--output-dir", out_dir,
                "--json", *p["args"]]
        t = time.time()
        try:
            proc = ou.run_modex(args, timeout=600)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except Exception as e:  # timeout: recorded, reported by the tests
            rc, out, err = None, "", f"{type(e).__name__}: {e}"
        stem = next((s for s in p["stems"] if (out_dir / f"{s}.onnx").exists()), p["stems"][0])
        return p["id"], dict(rc=rc, stdout=out, stderr=err, seconds=time.time() - t,
                             out_dir=out_dir, checkpoint=ckpt,
                             onnx=out_dir / f"{stem}.onnx", sidecar=out_dir / f"{stem}.json")

    t1 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        exports = dict(pool.map(export, PLAN.values()))
    t_export = time.time() - t1

    jobs = []
    for eid, rec in exports.items():
        if rec["rc"] != 0 or not rec["onnx"].is_file():
            continue
        meta = zf.load_meta(PLAN[eid]["fixture"], root)
        for tag in PLAN[eid]["runs"]:
            run = meta["runs"][tag]
            jobs.append(dict(id=f"{eid}/{tag}", model=str(rec["onnx"]),
                             input=str(zf.case_dir(PLAN[eid]["fixture"], root) / run["input"]),
                             dims=run["dims"], output=str(rec["out_dir"] / f"{tag}.ort.bin"),
                             threads=2))
    t2 = time.time()
    ort, ort_stderr = ou.run_ort(jobs, work.path) if jobs else ({}, "")
    t_ort = time.time() - t2
    margins = []
    for job in jobs:
        res = ort.get(job["id"])
        if res and res.get("ok"):
            eid, tag = job["id"].rsplit("/", 1)
            meta = zf.load_meta(PLAN[eid]["fixture"], root)
            run = meta["runs"][tag]
            want = ou.read_f32(zf.case_dir(PLAN[eid]["fixture"], root) / run["logits"],
                               run["logits_dims"])
            try:
                got = ou.read_f32(job["output"], run["logits_dims"])
            except AssertionError:
                continue
            bound = ou.REL_TOL * float(np.abs(want).max()) + ou.ABS_TOL
            margins.append((float(np.abs(got.astype(np.float64) - want).max()) / bound, job["id"]))
    if margins:
        margins.sort(reverse=True)
        print("\nworst max|diff| / bound: " +
              ", ".join(f"{r:.3f} ({i})" for r, i in margins[:3]))
    print(f"\noracle timings: fixtures {t_fixtures:.1f} s, {len(exports)} exports {t_export:.1f} s "
          f"(sum of export wall times {sum(r['seconds'] for r in exports.values()):.1f} s), "
          f"{len(jobs)} ORT runs {t_ort:.1f} s")
    yield dict(root=root, work=work.path, exports=exports, ort=ort, ort_stderr=ort_stderr)
    work.cleanup()


def _export_ok(exported, eid):
    rec = exported["exports"][eid]
    if rec["rc"] != 0:
        pytest.fail(f"modex export exited {rec['rc']}:\n{rec['stderr'][-3000:]}")
    if not rec["onnx"].is_file():
        pytest.fail(f"modex export exited 0 but wrote no {rec['onnx'].name}; "
                    f"dir has {ou.listing(rec['out_dir'])}")
    return rec


def _load_model(rec):
    model = onnx.load(str(rec["onnx"]))
    rec["props"] = {m.key: m.value for m in model.metadata_props}
    return model


def _props(rec):
    """metadata_props, read once per file (the big models take a while to parse)."""
    if "props" not in rec:
        _load_model(rec)
    return rec["props"]


@pytest.mark.parametrize("eid", list(PLAN))
def test_logits_match_torch(exported, eid):
    """ONNX Runtime on modex's file reproduces PyTorch's logits at batch 1 and 4."""
    _export_ok(exported, eid)
    p = PLAN[eid]
    meta = zf.load_meta(p["fixture"], exported["root"])
    for tag in p["runs"]:
        res = exported["ort"].get(f"{eid}/{tag}")
        assert res is not None, f"no ORT result for {eid}/{tag}:\n{exported['ort_stderr'][-2000:]}"
        assert res["ok"], f"ONNX Runtime could not run {eid}/{tag}: {res['error']}"
        assert res["input_names"] == ["image"], res["input_names"]
        assert res["output_names"] == ["logits"], res["output_names"]
        run = meta["runs"][tag]
        want = ou.read_f32(zf.case_dir(p["fixture"], exported["root"]) / run["logits"],
                           run["logits_dims"])
        assert res["outputs"]["logits"]["dims"] == run["logits_dims"], res["outputs"]
        got = ou.read_f32(res["output"], run["logits_dims"])
        ou.compare_logits(got, want, f"{eid} {tag} {run['dims']}")


@pytest.mark.parametrize("eid", list(PLAN))
def test_onnx_file_is_valid(exported, eid):
    """The ONNX checker and strict shape inference accept the file; opset, names, dims."""
    rec = _export_ok(exported, eid)
    p = PLAN[eid]
    nc = SPECS[p["fixture"]]["num_classes"]
    # On a loaded proto: onnx 1.12's check_model(<path>, full_check=True) rewrites the file in
    # place with inferred shapes.
    model = _load_model(rec)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == p["opset"], f"opset_import {opsets}"

    g = model.graph
    init_names = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in init_names]
    assert [i.name for i in inputs] == ["image"], [i.name for i in inputs]
    assert [o.name for o in g.output] == ["logits"], [o.name for o in g.output]
    x, y = inputs[0].type.tensor_type, g.output[0].type.tensor_type
    assert x.elem_type == onnx.TensorProto.FLOAT and y.elem_type == onnx.TensorProto.FLOAT

    def dims(t):
        return [d.dim_param if d.HasField("dim_param") else
                (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]

    xd, yd = dims(x), dims(y)
    if p["static"]:
        assert xd[:2] == [1, 3] and xd[2] == xd[3] and xd[2] in p["input_sizes"], \
            f"input dims {xd}, expected [1, 3, S, S] with S in {p['input_sizes']}"
        assert yd == [1, nc], f"output dims {yd}"
    else:
        assert len(xd) == 4 and xd[1] == 3, f"input dims {xd}"
        for i in (0, 2, 3):
            assert isinstance(xd[i], str) and xd[i], f"input dim {i} is not symbolic: {xd}"
        assert len(set(xd[i] for i in (0, 2, 3))) == 3, f"batch/height/width must differ: {xd}"
        assert len(yd) == 2 and yd[1] == nc, f"output dims {yd}"
        assert yd[0] == xd[0], f"output batch {yd[0]!r} is not the input's batch {xd[0]!r}"


@pytest.mark.parametrize("eid", list(PLAN))
def test_metadata_props(exported, eid):
    rec = _export_ok(exported, eid)
    p = PLAN[eid]
    spec = SPECS[p["fixture"]]
    props = _props(rec)
    required = {"architecture", "num_classes", "class_names", "preprocessing", "source_sha256",
                "modex_version"}
    assert required <= set(props), f"missing metadata_props {sorted(required - set(props))}"
    assert props["architecture"] == spec["arch"]
    assert int(props["num_classes"]) == spec["num_classes"]
    names = json.loads(props["class_names"])
    assert isinstance(names, list) and all(isinstance(n, str) for n in names), names
    if "class_names" in spec["expect"]:
        assert names == spec["expect"]["class_names"]
    else:
        assert len(names) in (0, spec["num_classes"]), f"{len(names)} class names"
    pre = json.loads(props["preprocessing"])
    assert pre["input_size"] in p["input_sizes"], f"{pre}: input_size not in {p['input_sizes']}"
    assert isinstance(pre["layout"], str) and pre["layout"], pre
    for key in ("mean", "std"):
        assert len(pre[key]) == 3 and all(isinstance(v, (int, float)) for v in pre[key]), pre
    want_sha = hashlib.sha256(Path(rec["checkpoint"]).read_bytes()).hexdigest()
    assert props["source_sha256"] == want_sha
    assert props["modex_version"].strip()


@pytest.mark.parametrize("eid", list(PLAN))
def test_json_report_and_sidecar(exported, eid):
    """--json prints the contract's object; the sidecar exists; nothing else is left in DIR."""
    rec = _export_ok(exported, eid)
    p = PLAN[eid]
    spec = SPECS[p["fixture"]]
    report = json.loads(rec["stdout"])
    missing = _expected_stdout_keys() - set(report)
    assert not missing, f"--json report lacks {sorted(missing)}: {sorted(report)}"
    assert report["architecture"] == spec["arch"]
    assert report["num_classes"] == spec["num_classes"]
    assert report["input_size"] in p["input_sizes"], report["input_size"]
    want_wrapper = spec["expect"].get("wrapper")
    if eid in WRAPPER_EITHER:
        w = report["wrapper"]
        assert w is None or (isinstance(w, dict) and w.get("backbone_prefix") == "backbone."), w
    elif want_wrapper is None:
        assert report["wrapper"] is None, report["wrapper"]
    else:
        w = report["wrapper"]
        assert isinstance(w, dict) and w.get("backbone_prefix") == want_wrapper["backbone_prefix"] \
            and w.get("head") in want_wrapper["head"], f"wrapper {w}, expected {want_wrapper}"
    assert [o["format"] for o in report["outputs"]] == ["onnx"]
    out = report["outputs"][0]
    assert Path(out["path"]).resolve() == rec["onnx"].resolve()
    assert out["bytes"] == rec["onnx"].stat().st_size
    assert Path(report["sidecar"]).resolve() == rec["sidecar"].resolve()
    assert isinstance(report["seconds"], (int, float)) and report["seconds"] >= 0
    sidecar = json.loads(rec["sidecar"].read_text())
    assert isinstance(sidecar, dict)
    assert spec["arch"] in json.dumps(sidecar), "sidecar does not name the architecture"
    left = set(ou.listing(rec["out_dir"])) - {f"{tag}.ort.bin" for tag in p["runs"]}
    assert left == {rec["onnx"].name, rec["sidecar"].name}, f"files in DIR: {sorted(left)}"


def test_config_mean_std_reach_preprocessing(exported):
    """A checkpoint's config mean/std (as scripts/train_demo.py writes them) describe its
    preprocessing better than ImageNet's defaults: they must reach the metadata."""
    rec = _export_ok(exported, "train_dict_config")
    spec = SPECS["variant-train_dict_config"]
    props = _props(rec)
    pre = json.loads(props["preprocessing"])
    assert np.allclose(pre["mean"], spec["expect"]["mean"]) and \
        np.allclose(pre["std"], spec["expect"]["std"]), pre


def test_every_zoo_architecture_is_covered():
    """The plan exports both checkpoints of every architecture the contract names."""
    required = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] + \
        [f"efficientnet_b{i}" for i in range(8)] + \
        ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]
    for arch in required:
        assert f"{arch}-a" in PLAN and f"{arch}-b" in PLAN, arch
    assert {p["opset"] for p in PLAN.values()} >= {11, 13, 17}
