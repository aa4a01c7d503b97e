"""The ONNX importer end to end (issue 3, "ONNX import").

Third-party ONNX files (tests/io/make_onnx_fixtures.py: torch.onnx.export of torchvision and
custom models at opsets 11-17, plus hand-built forms torch never writes) are imported by modex,
run through the standard passes and written back as ONNX by the `onnx_roundtrip` test helper
(tests/io/onnx_roundtrip_main.cc). ONNX Runtime then runs every written file, and the original
file too, at batch 1 and 4 (and an odd size where height/width are dynamic); both must match
PyTorch's logits: max|diff| <= 1e-4 * max|logit| + 1e-5. Bad files must fail clearly, with
no output written.

    MODEX_ONNX_ROUNDTRIP=build/tests/onnx_roundtrip /usr/bin/python3 -m pytest -q tests/oracle/test_onnx_import.py
"""
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "io"))
import oracle_util as ou  # noqa: E402
import make_onnx_fixtures as mof  # noqa: E402

import onnx  # noqa: E402  (Debian's python3-onnx; missing is an error, never a skip)

SPECS = {s["name"]: s for s in mof.all_specs()}
RUNS = [(name, run) for name, s in SPECS.items() for run in s["runs"]]
# Shape arithmetic the importer evaluates itself: none of it may reach modex's written file.
SHAPE_OPS = {"Shape", "Gather", "Slice", "Cast", "ConstantOfShape", "Size"}


def roundtrip_bin():
    return ou.test_tool("MODEX_ONNX_ROUNDTRIP", "onnx_roundtrip")


def run_roundtrip(src, dst, *args):
    return subprocess.run([roundtrip_bin(), str(src), str(dst), *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def imported():
    """Generates missing fixtures, imports + re-exports every case (2 at a time), then runs every
    ORT job (original and modex file, every run) in one Node process."""
    t0 = time.time()
    root = mof.ensure()
    t_fixtures = time.time() - t0
    roundtrip_bin()
    work = ou.WorkDir("modex-onnx-import-")

    def convert(name):
        out = work.path / f"{name}.onnx"
        t = time.time()
        spec = SPECS[name]
        proc = run_roundtrip(root / name / "model.onnx", out, "--opset", spec.get("write_opset", spec["opset"]))
        summary = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None
        return name, dict(rc=proc.returncode, stderr=proc.stderr, summary=summary, onnx=out, seconds=time.time() - t)

    t1 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        cases = dict(pool.map(convert, SPECS))
    t_import = time.time() - t1

    jobs = []
    for name, rec in cases.items():
        meta = mof.load_meta(root / name)
        rec["meta"] = meta
        for run, info in meta["runs"].items():
            common = dict(input=str(root / name / info["input"]), dims=info["dims"], input_name=meta["input"],
                          output_name=meta["output"], threads=2)
            jobs.append(dict(id=f"{name}/{run}/original", model=str(root / name / "model.onnx"),
                             output=str(work.path / f"{name}.{run}.original.bin"), **common))
            if rec["rc"] == 0:
                jobs.append(dict(id=f"{name}/{run}/modex", model=str(rec["onnx"]),
                                 output=str(work.path / f"{name}.{run}.modex.bin"), **common))
    t2 = time.time()
    ort, _ = ou.run_ort(jobs, work.path)
    t_ort = time.time() - t2
    diffs = {}
    print(f"\nonnx import timings: fixtures {t_fixtures:.1f} s, {len(cases)} imports {t_import:.1f} s, "
          f"{len(jobs)} ORT runs {t_ort:.1f} s")
    yield dict(root=root, work=work.path, cases=cases, ort=ort, diffs=diffs)
    if diffs:
        print("\nmax|diff| (ONNX Runtime on modex's file vs PyTorch), relative to max|logit|:")
        for key in sorted(diffs):
            worst, scale = diffs[key]
            print(f"  {key:40s} {worst:.2e} (max|logit| {scale:.3g}, {worst / max(scale, 1e-30):.1e} relative)")
    work.cleanup()


def _case(imported, name):
    rec = imported["cases"][name]
    if rec["rc"] != 0:
        pytest.fail(f"onnx_roundtrip exited {rec['rc']}:\n{rec['stderr'][-3000:]}")
    return rec


def _ort_output(imported, name, run, which):
    res = imported["ort"].get(f"{name}/{run}/{which}")
    if not res or not res["ok"]:
        pytest.fail(f"ONNX Runtime failed on the {which} file: {res and res.get('error')}")
    info = imported["cases"][name]["meta"]["runs"][run]
    return ou.read_f32(res["output"], info["logits_dims"])


def _torch_logits(imported, name, run):
    info = imported["cases"][name]["meta"]["runs"][run]
    return ou.read_f32(imported["root"] / name / info["logits"], info["logits_dims"])


@pytest.mark.parametrize("name", list(SPECS))
def test_import_emits_the_expected_ir(imported, name):
    """The import succeeds, keeps the I/O names, and meets the case's expectations (ops present
    or absent, Reshape targets resolved from Shape chains)."""
    rec = _case(imported, name)
    s = rec["summary"]
    ops = s["ops"]
    expect = SPECS[name].get("expect", {})
    for op in expect.get("ops", []):
        assert op in ops, f"expected a {op} node; ops: {ops}"
    for op in expect.get("absent_ops", []):
        assert op not in ops, f"did not expect {op}; ops: {ops}"
    if "reshape_targets" in expect:
        targets = [a["shape"] for a in s["attrs"].values() if "shape" in a]
        assert targets == expect["reshape_targets"]
    meta = rec["meta"]
    assert [i["name"] for i in s["inputs"]] == [meta["input"]]
    assert [o["name"] for o in s["outputs"]] == [meta["output"]]
    assert s["source_opset"] == SPECS[name]["opset"]


@pytest.mark.parametrize("name", list(SPECS))
def test_written_file_is_valid_onnx(imported, name):
    """modex's file passes the ONNX checker and strict shape inference, at the source opset (see
    write_opset), with the source's input/output names and dynamic dims."""
    rec = _case(imported, name)
    model = onnx.load(str(rec["onnx"]))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    src = onnx.load(str(imported["root"] / name / "model.onnx"), load_external_data=False)
    spec = SPECS[name]
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [spec.get("write_opset", spec["opset"])]

    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    init_names = {i.name for i in src.graph.initializer}
    src_inputs = [i for i in src.graph.input if i.name not in init_names]
    assert [i.name for i in model.graph.input] == [i.name for i in src_inputs]
    assert [dims(i) for i in model.graph.input] == [dims(i) for i in src_inputs]
    assert [o.name for o in model.graph.output] == [o.name for o in src.graph.output]
    leaked = SHAPE_OPS & {n.op_type for n in model.graph.node}
    assert not leaked, f"shape arithmetic survived: {leaked}"



@pytest.mark.parametrize("name,run", RUNS, ids=[f"{n}/{r}" for n, r in RUNS])
def test_logits_match_torch(imported, name, run):
    """ONNX Runtime on modex's re-exported file reproduces PyTorch's logits."""
    _case(imported, name)
    got = _ort_output(imported, name, run, "modex")
    want = _torch_logits(imported, name, run)
    worst, _ = ou.compare_logits(got, want, f"{name}/{run}")
    imported["diffs"][f"{name}/{run}"] = (worst, float(abs(want).max()))


@pytest.mark.parametrize("name,run", RUNS, ids=[f"{n}/{r}" for n, r in RUNS])
def test_original_file_matches_torch(imported, name, run):
    """The fixture itself is right: ONNX Runtime on the original file matches the reference."""
    got = _ort_output(imported, name, run, "original")
    ou.compare_logits(got, _torch_logits(imported, name, run), f"{name}/{run} (original file)")


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error, a distinct exit status, and no output file.

def _broken(imported, kind):
    src = onnx.load(str(imported["root"] / "view-chain-op13" / "model.onnx"))
    if kind == "dangling":
        src.graph.node[1].input[0] = "no_such_value"
    elif kind == "unknown-op":
        src.graph.node[1].op_type = "FancyConv"
    elif kind == "opset":
        src.opset_import[0].version = 18
    elif kind == "softmax-axis":
        node = onnx.helper.make_node("Softmax", ["x_sm"], ["logits"], "Softmax_bad", axis=1)
        src = onnx.helper.make_model(
            onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x_sm", 1, ["N", 10, 4, 4])],
                                   [onnx.helper.make_tensor_value_info("logits", 1, None)]),
            opset_imports=[onnx.helper.make_opsetid("", 11)])
        src.ir_version = 7
    return src.SerializeToString()


@pytest.mark.parametrize("kind,status,message", [
    ("truncated", 2, "truncated or corrupt"),
    ("dangling", 2, "'no_such_value' is not produced by any node"),
    ("unknown-op", 3, "(FancyConv): op FancyConv is not supported (opset 13)"),
    ("opset", 3, "opset 18 is not supported"),
    ("softmax-axis", 3, "node 'Softmax_bad' (Softmax)"),
])
def test_bad_files_fail_clearly(imported, tmp_path, kind, status, message):
    src = tmp_path / "bad.onnx"
    if kind == "truncated":
        data = (imported["root"] / "resnet18-op11" / "model.onnx").read_bytes()
        src.write_bytes(data[: len(data) // 3])
    else:
        src.write_bytes(_broken(imported, kind))
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    proc = run_roundtrip(src, out)
    assert proc.returncode == status, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert str(src) in proc.stderr  # the error names the file
    assert ou.listing(out.parent) == []


# ---------------------------------------------------------------------------------------------
# Upstream ONNX node tests (tests/io/onnx_node_tests.txt lists each with its expected outcome).

NODE_TEST_DIR = Path(os.environ.get("MODEX_ONNX_NODE_TESTS", "/usr/share/libonnx-testdata/data/node"))
NODE_TEST_LIST = HERE.parent / "io" / "onnx_node_tests.txt"


def _node_test_list():
    expected = {}
    for line in NODE_TEST_LIST.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head, _, message = line.partition("#")
        name, outcome = head.split()
        expected[name] = (outcome, message.strip())
    return expected


NODE_TESTS = _node_test_list()


@pytest.fixture(scope="module")
def node_results():
    """Freezes, imports and re-exports every listed node test, then runs the results in ORT."""
    from onnx import numpy_helper
    if not NODE_TEST_DIR.is_dir():
        raise AssertionError(f"{NODE_TEST_DIR} missing: apt-get install libonnx-testdata (or set MODEX_ONNX_NODE_TESTS)")
    work = ou.WorkDir("modex-onnx-node-tests-")
    results, jobs = {}, []
    for name in NODE_TESTS:
        case = NODE_TEST_DIR / name
        data = case / "test_data_set_0"
        inputs = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data.glob("input_*.pb"))]
        expected = numpy_helper.to_array(onnx.load_tensor(str(data / "output_0.pb")))
        model = onnx.load(str(case / "model.onnx"))
        for vi, array in list(zip(model.graph.input, inputs))[1:]:
            model.graph.initializer.append(numpy_helper.from_array(array, vi.name))
        del model.graph.input[1:]
        src, out = work.path / f"{name}.onnx", work.path / f"{name}.modex.onnx"
        onnx.save(model, str(src))
        proc = run_roundtrip(src, out)
        results[name] = dict(rc=proc.returncode, stderr=proc.stderr, expected=expected)
        if proc.returncode == 0:
            inputs[0].astype("<f4").tofile(work.path / f"{name}.input.bin")
            jobs.append(dict(id=name, model=str(out), input=str(work.path / f"{name}.input.bin"),
                             dims=list(inputs[0].shape), output=str(work.path / f"{name}.output.bin"),
                             output_name=model.graph.output[0].name))
    ort, _ = ou.run_ort(jobs, work.path) if jobs else ({}, "")
    for name, res in ort.items():
        results[name]["ort"] = res
    yield results
    work.cleanup()


@pytest.mark.parametrize("name", list(NODE_TESTS))
def test_onnx_node_test(node_results, name):
    outcome, message = NODE_TESTS[name]
    rec = node_results[name]
    if outcome == "pass":
        assert rec["rc"] == 0, rec["stderr"]
        res = rec["ort"]
        assert res["ok"], res.get("error")
        want = rec["expected"]
        got = ou.read_f32(res["output"], list(want.shape))
        ou.compare_logits(got, want, name)
    else:
        status = int(outcome.split(":")[1])
        assert rec["rc"] == status, f"exit {rec['rc']}, expected {status}: {rec['stderr']}"
        first_line = rec["stderr"].splitlines()[0] if rec["stderr"] else ""  # a hint may follow
        assert first_line.endswith(message), rec["stderr"]
