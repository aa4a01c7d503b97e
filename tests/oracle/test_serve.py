"""`modex serve` over real HTTP (curl) on loopback (issue 7).

Models: a mobilenet_v3_small checkpoint with seeded random weights and BatchNorm statistics
(config: 10 named classes, 64x64 input) saved with torch.save, exported by `modex export` to ONNX
and TFLite float32/float16; a second checkpoint with other weights for hot reload. Predictions of
the server are checked against `modex predict --json` on the same image files and model (which
test_predict.py checks against torchvision + PyTorch). Every endpoint and error path is exercised
with curl: 400/404/413/415, 503 + Retry-After with a one-slot queue, 504 on timeout, an A/B
route over 2,000 requests (within 3% of the weights), hot reload under traffic (no failed
request; a broken file keeps the old model serving and is reported), SIGTERM with requests in
flight (all answered, exit 0), batching (same answers as single runs) and a 10 s wrk run.

    MODEX_BIN=build/modex /usr/bin/python3 -m pytest -q tests/oracle/test_serve.py
"""
import json
import os
import re
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle_util as ou  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WRK_LUA = REPO / "bench" / "serve_wrk.lua"
CLASSES = ["tee", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


# ---------------------------------------------------------------------------------------------
# fixtures: checkpoints, exported models, images


def _checkpoint(path, seed):
    import torch
    import torchvision
    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v3_small(num_classes=len(CLASSES))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        # A classifier head that separates the classes clearly (the default init gives near-ties).
        head = model.classifier[-1]
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.5)
        head.bias.copy_(torch.randn(head.bias.shape, generator=g) * 0.5)
    torch.save({"model_state_dict": model.state_dict(),
                "config": {"architecture": "mobilenet_v3_small", "num_classes": len(CLASSES), "input_size": 64,
                           "class_names": CLASSES}}, path)


def _images(folder):
    from PIL import Image
    rng = np.random.default_rng(11)
    folder.mkdir()
    made = {}
    for name, (w, h), fmt in [("photo.jpg", (320, 240), "JPEG"), ("tall.png", (90, 160), "PNG"),
                              ("small.bmp", (70, 64), "BMP"), ("square.jpg", (224, 224), "JPEG")]:
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
        noise = rng.normal(0, 50, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / name, fmt)
        made[name] = folder / name
    return made


def _predict_reference(model, folder):
    proc = ou.run_modex(["predict", model, folder, "--json", "--top", "10"], timeout=600)
    assert proc.returncode == 0, proc.stderr
    return {Path(r["image"]).name: r for r in json.loads(proc.stdout)["results"]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    models = {}
    for key, seed in [("a", 1), ("b", 2)]:
        ckpt = work / f"{key}.pth"
        _checkpoint(ckpt, seed)
        proc = ou.run_modex(["export", "--checkpoint", ckpt, "--format", "both", "--quantize", "none,float16",
                             "--output-dir", work / "models", "--name", key])
        assert proc.returncode == 0, proc.stderr
        models[key] = work / "models" / f"{key}.onnx"
        models[key + "_tflite"] = work / "models" / f"{key}.tflite"
        models[key + "_fp16"] = work / "models" / f"{key}_float16.tflite"
    images = _images(work / "images")
    refs = {k: _predict_reference(p, work / "images") for k, p in models.items() if k in ("a", "a_tflite", "a_fp16", "b")}
    return {"work": work, "models": models, "images": images, "refs": refs}


# ---------------------------------------------------------------------------------------------
# the server and curl


class Server:
    """`modex serve ... --port 0` on loopback; the URL comes from its "listening on" line."""

    def __init__(self, args, work):
        self.log_path = Path(work) / f"serve-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")
        cmd = [ou.modex_bin(), "serve", *map(str, args), "--host", "127.0.0.1", "--port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            if sel.select(timeout=0.5):
                line = self.proc.stdout.readline()
                break
        m = re.search(r"listening on (http://[0-9.:]+)", line)
        if not m:
            self.proc.kill()
            raise AssertionError(f"modex serve did not start: {line!r}\n{self.stderr()}")
        self.url = m.group(1)

    def stderr(self):
        self.log.flush()
        return self.log_path.read_text()

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        self.log.close()
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.stop()
        else:
            self.log.close()


class Resp:
    def __init__(self, code, headers, body):
        self.code, self.headers, self.body = code, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"HTTP {self.code} {self.body[:300]!r}"


def curl(url, *args, timeout=120):
    """One request with curl; returns status, lower-cased headers and body."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    tag = f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
    body_path, head_path = tmp / f"modex-curl-{tag}.body", tmp / f"modex-curl-{tag}.head"
    try:
        proc = subprocess.run(["curl", "-sS", "-o", body_path, "-D", head_path, "-w", "%{http_code}", *map(str, args), url],
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"curl {url} failed: {proc.stderr}"
        headers = {}
        for line in head_path.read_text(errors="replace").splitlines()[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return Resp(int(proc.stdout), headers, body_path.read_bytes())
    finally:
        body_path.unlink(missing_ok=True)
        head_path.unlink(missing_ok=True)


def post_image(url, path, content_type="image/jpeg", extra=()):
    return curl(url, "-X", "POST", "-H", f"Content-Type: {content_type}", "--data-binary", f"@{path}", *extra)


def curl_many(url, count, args, out_dir, parallel=1, timeout=600):
    """`count` requests in one curl process (`parallel` at a time); returns [(status, body)]."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = out_dir / "curl.cfg"
    with open(config, "w") as f:
        for i in range(count):
            f.write(f'url = "{url}"\noutput = "{out_dir}/r{i:05d}.json"\n')
    cmd = ["curl", "-sS", "-w", "%{http_code} %{filename_effective}\\n", "-K", str(config), *map(str, args)]
    if parallel > 1:
        cmd += ["-Z", "--parallel-max", str(parallel)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    results = []
    for line in proc.stdout.splitlines():
        code, name = line.split(" ", 1)
        body = Path(name).read_bytes() if Path(name).is_file() else b""
        results.append((int(code), body))
    assert len(results) == count, f"curl answered {len(results)} of {count}: {proc.stderr[-2000:]}"
    return results


def metrics(server):
    """Prometheus text -> {(name, frozenset(labels)): value}; checks HELP/TYPE lines precede samples."""
    r = curl(f"{server.url}/metrics")
    assert r.code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4"), r
    out, typed = {}, {}
    for line in r.body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            typed[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)', line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels = m.group(1), m.group(3) or ""
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, f"sample {name} without a TYPE line"
        pairs = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels))
        out[(name, pairs)] = float(m.group(4))
    return out


def metric(ms, name, **labels):
    return sum(v for (n, ls), v in ms.items() if n == name and set(labels.items()) <= set(ls))


def _check_against_predict(resp_json, ref, k=5):
    assert resp_json["predicted_class"] == ref["predicted_class"], (resp_json, ref["top"][:3])
    assert resp_json["class_name"] == ref["class_name"] == CLASSES[ref["predicted_class"]]
    assert abs(resp_json["confidence"] - ref["confidence"]) <= 1e-5
    top = resp_json["top5"]
    assert len(top) == k
    for got, want in zip(top, ref["top"][:k]):
        assert got["class"] == want["class"] and got["name"] == want["name"]
        assert abs(got["probability"] - want["probability"]) <= 1e-5


# ---------------------------------------------------------------------------------------------
# tests


@pytest.fixture(scope="module")
def server(env):
    m = env["models"]
    with Server([f"a={m['a']}", f"a_tflite={m['a_tflite']}", f"a_fp16={m['a_fp16']}", "--threads", "1",
                 "--max-body", "1000000", "--max-pixels", "4000000"], env["work"]) as s:
        yield s


def test_health_ready_and_model_listing(server, env):
    assert curl(f"{server.url}/healthz").json() == {"status": "ok"}
    r = curl(f"{server.url}/readyz")
    assert r.code == 200 and r.json()["status"] == "ready"
    listing = curl(f"{server.url}/v1/models").json()
    by_name = {m["name"]: m for m in listing["models"]}
    assert set(by_name) == {"a", "a_tflite", "a_fp16"}
    a = by_name["a"]
    assert a["version"] == 1 and a["format"] == "onnx" and a["path"] == str(env["models"]["a"])
    assert a["inputs"][0]["name"] == "image" and a["inputs"][0]["shape"][1] == 3
    assert a["outputs"][0]["name"] == "logits" and a["outputs"][0]["shape"][1] == len(CLASSES)
    assert a["class_names"] == CLASSES and a["batchable"] is True
    assert json.loads(a["metadata"]["class_names"]) == CLASSES
    assert a["preprocessing"]["size"] == [64, 64]
    assert by_name["a_tflite"]["preprocessing"]["layout"] == "NHWC"
    assert by_name["a_tflite"]["inputs"][0]["shape"][3] == 3
    assert a["last_reload_error"] is None
    one = curl(f"{server.url}/v1/models/a_fp16")
    assert one.code == 200 and one.json()["name"] == "a_fp16"


@pytest.mark.parametrize("model", ["a", "a_tflite", "a_fp16"])
def test_predictions_match_modex_predict(server, env, model):
    ref = env["refs"][model]
    url = f"{server.url}/v1/models/{model}/predict"
    for name, path in env["images"].items():
        ctype = {".jpg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp"}[path.suffix]
        raw = post_image(url, path, ctype)
        assert raw.code == 200, raw
        j = raw.json()
        _check_against_predict(j, ref[name])
        assert j["model"] == model and j["version"] == 1 and j["latency_ms"] > 0 and "route" not in j
        # The same file as a multipart upload (what a browser form or requests' files= sends).
        multi = curl(url + "?top=3", "-F", f"image=@{path};type={ctype}")
        assert multi.code == 200, multi
        _check_against_predict(multi.json(), ref[name], k=3)
    # octet-stream and no content type at all are accepted too.
    path = env["images"]["photo.jpg"]
    assert post_image(url, path, "application/octet-stream").code == 200
    r = curl(url + "?top=10", "-X", "POST", "-H", "Content-Type:", "--data-binary", f"@{path}")
    assert r.code == 200 and len(r.json()["top5"]) == 10, r


def _bomb_png(path, side=30000):
    """A valid PNG header announcing side x side pixels with a tiny compressed IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * side
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(50)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_error_paths(server, env, tmp_path):
    url = f"{server.url}/v1/models/a/predict"
    photo = env["images"]["photo.jpg"]

    def err(r, code, words):
        assert r.code == code, r
        j = r.json()
        assert j["status"] == code and any(w in j["error"] for w in words), j
        assert r.headers["content-type"].startswith("application/json")

    err(post_image(f"{server.url}/v1/models/nope/predict", photo), 404, ["unknown model 'nope'"])
    err(curl(f"{server.url}/v1/models/nope"), 404, ["unknown model"])
    err(curl(f"{server.url}/v2/whatever"), 404, ["no such endpoint"])
    err(post_image(url, photo, "text/plain"), 415, ["unsupported content type text/plain"])
    err(curl(url, "-X", "POST", "--data-binary", f"@{photo}"), 415, ["application/x-www-form-urlencoded"])
    err(curl(url, "-F", f"image=@{photo};type=text/plain"), 415, ["text/plain"])
    notes = tmp_path / "notes.txt"
    notes.write_text("certainly not an image\n" * 20)
    err(post_image(url, notes, "image/jpeg"), 400, ["not a JPEG, PNG or BMP"])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo.read_bytes()[:400])
    err(post_image(url, broken, "image/jpeg"), 400, ["upload"])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    err(post_image(url, empty, "image/jpeg"), 400, ["empty body"])
    err(post_image(url + "?top=0", photo), 400, ["top must be"])
    err(post_image(url + "?top=abc", photo), 400, ["top must be"])
    bad_multipart = tmp_path / "mp.txt"
    bad_multipart.write_bytes(b"--XX\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n" + photo.read_bytes())
    err(post_image(url, bad_multipart, "multipart/form-data; boundary=XX"), 400, ["malformed multipart"])
    # Over --max-body (1 MB here): 413, whether the length is declared or the body is chunked.
    big = tmp_path / "big.jpg"
    big.write_bytes(photo.read_bytes() + b"\0" * 1_200_000)
    err(post_image(url, big), 413, ["--max-body"])
    err(post_image(url, big, extra=("-H", "Transfer-Encoding: chunked")), 413, ["--max-body"])
    # A decompression bomb: 900 megapixels announced by a 30 kB PNG (limit 4 MP here).
    bomb = _bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000
    err(post_image(url, bomb, "image/png"), 413, ["more than the limit"])
    # A reload of an unknown model.
    err(curl(f"{server.url}/v1/models/nope/reload", "-X", "POST"), 404, ["unknown model"])
    # The server is still fine.
    assert post_image(url, photo).code == 200


def test_metrics_count_requests_errors_and_latency(env):
    m = env["models"]
    with Server([f"a={m['a']}", "--threads", "1"], env["work"]) as s:
        url = f"{s.url}/v1/models/a/predict"
        photo = env["images"]["photo.jpg"]
        for _ in range(5):
            assert post_image(url, photo).code == 200
        assert post_image(url, photo, "text/plain").code == 415
        assert post_image(f"{s.url}/v1/models/zzz/predict", photo).code == 404
        ms = metrics(s)
        assert metric(ms, "modex_http_requests_total", endpoint="/v1/models/{name}/predict", code="200") == 5
        assert metric(ms, "modex_http_requests_total", endpoint="/v1/models/{name}/predict", code="415") == 1
        assert metric(ms, "modex_http_requests_total", endpoint="/v1/models/{name}/predict", code="404") == 1
        assert metric(ms, "modex_predict_requests_total", model="a", variant="a", code="200") == 5
        assert metric(ms, "modex_predict_requests_total", model="a", code="415") == 1
        assert metric(ms, "modex_predict_latency_seconds_count", model="a", variant="a") == 5
        assert metric(ms, "modex_predict_latency_seconds_bucket", model="a", variant="a", le="+Inf") == 5
        buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in ms.items()
                         if n == "modex_predict_latency_seconds_bucket" and dict(ls)["le"] != "+Inf")
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
        assert metric(ms, "modex_predict_latency_seconds_sum", model="a") > 0
        assert metric(ms, "modex_http_in_flight_requests") == 0
        assert metric(ms, "modex_model_version", model="a") == 1
        assert metric(ms, "modex_inference_batch_size_count", model="a") == 5
        assert ("modex_inference_queue_depth", frozenset()) in ms
        text = curl(f"{s.url}/metrics").body.decode()
        assert "# HELP modex_predict_latency_seconds " in text and "# TYPE modex_predict_latency_seconds histogram" in text
        # The metrics request itself was counted by the time of the next scrape.
        assert metric(metrics(s), "modex_http_requests_total", endpoint="/metrics", code="200") >= 2


def test_ab_route_splits_traffic_by_weight(env):
    m = env["models"]
    n = 2000
    with Server([f"fp32={m['a']}", f"fp16={m['a_fp16']}", "--route", "clf=fp32:90,fp16:10", "--threads", "1"],
                env["work"]) as s:
        listing = curl(f"{s.url}/v1/models").json()
        assert listing["routes"] == [{"name": "clf", "variants": [{"model": "fp32", "weight": 90.0},
                                                                   {"model": "fp16", "weight": 10.0}]}]
        photo = env["images"]["photo.jpg"]
        results = curl_many(f"{s.url}/v1/models/clf/predict", n,
                            ["-X", "POST", "-H", "Content-Type: image/jpeg", "--data-binary", f"@{photo}"],
                            env["work"] / "ab", parallel=4)
        assert all(code == 200 for code, _ in results), [r for r in results if r[0] != 200][:3]
        served = [json.loads(body) for _, body in results]
        assert all(j["route"] == "clf" for j in served)
        counts = {v: sum(j["model"] == v for j in served) for v in ("fp32", "fp16")}
        assert counts["fp32"] + counts["fp16"] == n
        share = counts["fp16"] / n
        print(f"A/B split over {n} requests: fp32 {counts['fp32']}, fp16 {counts['fp16']} ({share:.1%} for weight 10%)")
        assert abs(share - 0.10) <= 0.03, counts
        # Both variants give the reference answer for this image (fp16 within its tolerance).
        ref = env["refs"]["a"]["photo.jpg"]
        for j in served[:50]:
            assert j["predicted_class"] == ref["predicted_class"]
            assert abs(j["confidence"] - ref["confidence"]) <= (1e-5 if j["model"] == "fp32" else 1e-2)
        ms = metrics(s)
        assert metric(ms, "modex_predict_requests_total", model="clf", variant="fp16", code="200") == counts["fp16"]
        assert metric(ms, "modex_predict_requests_total", model="clf", variant="fp32", code="200") == counts["fp32"]
        assert metric(ms, "modex_predict_latency_seconds_count", model="clf", variant="fp16") == counts["fp16"]
    # A route naming a model that is not loaded is refused at start.
    proc = ou.run_modex(["serve", f"fp32={m['a']}", "--route", "clf=fp32:50,ghost:50", "--port", "0"])
    assert proc.returncode == 1 and "ghost" in proc.stderr, proc.stderr


def test_hot_reload_under_traffic(env, tmp_path):
    m = env["models"]
    live = tmp_path / "live.onnx"
    shutil.copy(m["a"], live)
    photo = env["images"]["photo.jpg"]
    ref_a, ref_b = env["refs"]["a"]["photo.jpg"], env["refs"]["b"]["photo.jpg"]
    assert ref_a["top"][0]["probability"] != ref_b["top"][0]["probability"]
    with Server([f"live={live}", "--threads", "1", "--watch-ms", "100"], env["work"]) as s:
        url = f"{s.url}/v1/models/live/predict"
        stop = threading.Event()
        batches = []

        def traffic(k):
            i = 0
            while not stop.is_set():
                batches.append(curl_many(url, 40, ["-X", "POST", "-H", "Content-Type: image/jpeg",
                                                   "--data-binary", f"@{photo}"], tmp_path / f"t{k}-{i}", parallel=2))
                i += 1

        workers = [threading.Thread(target=traffic, args=(k,)) for k in range(2)]
        for w in workers:
            w.start()
        try:
            time.sleep(1.0)
            # Replace the file the way deployments do: write a new file, rename it over.
            tmp = tmp_path / "incoming.onnx"
            shutil.copy(m["b"], tmp)
            os.replace(tmp, live)
            deadline = time.monotonic() + 30
            while curl(f"{s.url}/v1/models/live").json()["version"] < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert curl(f"{s.url}/v1/models/live").json()["version"] == 2, s.stderr()
            time.sleep(1.0)
            # A broken replacement: the old model keeps serving, the error is reported.
            live.write_bytes(b"\x08\x07 truncated garbage, not an ONNX model")
            deadline = time.monotonic() + 30
            while curl(f"{s.url}/v1/models/live").json()["last_reload_error"] is None and time.monotonic() < deadline:
                time.sleep(0.1)
            info = curl(f"{s.url}/v1/models/live").json()
            assert info["version"] == 2 and info["last_reload_error"] and "live.onnx" in info["last_reload_error"], info
            assert info["failed_reloads"] >= 1
            time.sleep(1.0)
        finally:
            stop.set()
            for w in workers:
                w.join()
        results = [r for b in batches for r in b]
        failed = [r for r in results if r[0] != 200]
        assert not failed, f"{len(failed)} of {len(results)} requests failed during reload: {failed[:3]}"
        versions = {}
        for _, body in results:
            j = json.loads(body)
            versions[j["version"]] = versions.get(j["version"], 0) + 1
            ref = ref_a if j["version"] == 1 else ref_b
            assert j["predicted_class"] == ref["predicted_class"], j
            assert abs(j["confidence"] - ref["confidence"]) <= 1e-5, (j, ref["confidence"])
        print(f"hot reload under traffic: {len(results)} requests, by version {versions}")
        assert versions.get(1, 0) > 0 and versions.get(2, 0) > 0 and set(versions) <= {1, 2}
        # The reload endpoint: a broken file answers 500 with the error, version 2 still serving.
        r = curl(f"{s.url}/v1/models/live/reload", "-X", "POST")
        assert r.code == 500 and r.json()["version"] == 2 and "live.onnx" in r.json()["error"], r
        assert post_image(url, photo).json()["version"] == 2
        # Fixed file + reload endpoint: version 3, the first model's answers again.
        shutil.copy(m["a"], tmp_path / "fixed.onnx")
        os.replace(tmp_path / "fixed.onnx", live)
        r = curl(f"{s.url}/v1/models/live/reload", "-X", "POST")
        assert r.code == 200 and r.json() == {"model": "live", "reloaded": True, "version": 3}, r
        j = post_image(url, photo).json()
        assert j["version"] == 3 and abs(j["confidence"] - ref_a["confidence"]) <= 1e-5
        ms = metrics(s)
        assert metric(ms, "modex_model_reloads_total", model="live", result="error") >= 2
        assert metric(ms, "modex_model_reloads_total", model="live", result="ok") >= 2
        assert metric(ms, "modex_model_version", model="live") >= 3


def _slow_server(env, *extra, size=448):
    # --input-size 448 makes each inference of the 64x64 model ~50x slower: requests pile up.
    return Server([f"slow={env['models']['a']}", "--threads", "1", "--workers", "1", "--input-size", str(size), *extra],
                  env["work"])


def test_full_queue_answers_503_with_retry_after(env):
    photo = env["images"]["photo.jpg"]
    with _slow_server(env, "--max-queue", "1") as s:
        url = f"{s.url}/v1/models/slow/predict"
        results = curl_many(url, 24, ["-X", "POST", "-H", "Content-Type: image/jpeg", "--data-binary", f"@{photo}"],
                            env["work"] / "queue", parallel=24)
        codes = [c for c, _ in results]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0, codes
        busy = json.loads(next(b for c, b in results if c == 503))
        assert "busy" in busy["error"] and busy["status"] == 503
        # The Retry-After header, seen with a single request while the queue is full.
        seen = None
        stop = threading.Event()

        def flood():
            while not stop.is_set():
                curl_many(url, 8, ["-X", "POST", "-H", "Content-Type: image/jpeg", "--data-binary", f"@{photo}"],
                          env["work"] / "flood", parallel=8)

        t = threading.Thread(target=flood)
        t.start()
        try:
            for _ in range(200):
                r = post_image(url, photo)
                if r.code == 503:
                    seen = r
                    break
        finally:
            stop.set()
            t.join()
        assert seen is not None and seen.headers.get("retry-after") == "1", seen
        assert metric(metrics(s), "modex_predict_requests_total", model="slow", code="503") >= codes.count(503)


def test_request_timeout_answers_504(env):
    with _slow_server(env, "--timeout-ms", "1") as s:
        r = post_image(f"{s.url}/v1/models/slow/predict", env["images"]["photo.jpg"])
        assert r.code == 504 and "timed out" in r.json()["error"], r


def test_sigterm_finishes_requests_in_flight(env):
    photo = env["images"]["photo.jpg"]
    s = _slow_server(env, size=1024)  # ~0.1 s or more per inference: all requests are in flight at once
    try:
        url = f"{s.url}/v1/models/slow/predict"
        n = 4
        procs = [subprocess.Popen(["curl", "-sS", "-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: image/jpeg",
                                   "--data-binary", f"@{photo}", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(n)]
        deadline = time.monotonic() + 30
        in_flight = 0
        while in_flight < n and time.monotonic() < deadline:
            in_flight = metric(metrics(s), "modex_http_in_flight_requests")
        assert in_flight == n, "the requests did not overlap; the test needs a slower inference"
        s.proc.send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=120) for p in procs]
        rc = s.proc.wait(timeout=60)
        for out, errout in outs:
            body, code = out.rsplit("\n", 1)
            assert code == "200", (out, errout)
            assert json.loads(body)["model"] == "slow"
        assert rc == 0, s.stderr()
        assert "SIGTERM received" in s.stderr() and "stopped" in s.stderr()
        # Nothing listens any more.
        r = subprocess.run(["curl", "-sS", f"{s.url}/healthz"], capture_output=True, text=True)
        assert r.returncode != 0
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
        s.log.close()


def test_batching_gives_the_same_answers(env):
    m = env["models"]
    with Server([f"a={m['a']}", "--threads", "1", "--max-batch", "8", "--batch-timeout-ms", "20"], env["work"]) as s:
        url = f"{s.url}/v1/models/a/predict"
        ref = env["refs"]["a"]
        names = list(env["images"])
        cfg_dir = env["work"] / "batch"
        # Mixed images in parallel, so engine calls combine different inputs.
        config = []
        for i in range(48):
            name = names[i % len(names)]
            ctype = {".jpg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp"}[env["images"][name].suffix]
            config.append((name, ctype))
        results = []
        threads = []

        def run(name, ctype, k):
            results.extend((name, c, b) for c, b in curl_many(
                url, 12, ["-X", "POST", "-H", f"Content-Type: {ctype}", "--data-binary", f"@{env['images'][name]}"],
                cfg_dir / f"{k}", parallel=12))

        for k, name in enumerate(names):
            ctype = {".jpg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp"}[env["images"][name].suffix]
            threads.append(threading.Thread(target=run, args=(name, ctype, k)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 12 * len(names)
        batched = 0
        for name, code, body in results:
            assert code == 200, body
            j = json.loads(body)
            _check_against_predict(j, ref[name])
            batched += j["batch_size"] > 1
        ms = metrics(s)
        calls = metric(ms, "modex_inference_batch_size_count", model="a")
        print(f"batching: {len(results)} requests in {calls:.0f} engine calls; {batched} answered from batches > 1")
        assert batched > 0 and calls < len(results)


def test_cli_errors(env, tmp_path):
    proc = ou.run_modex(["serve"])
    assert proc.returncode == 2
    proc = ou.run_modex(["serve", tmp_path / "missing.onnx", "--port", "0"])
    assert proc.returncode == 1 and "missing.onnx" in proc.stderr, proc.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    proc = ou.run_modex(["serve", bad, "--port", "0"])
    assert proc.returncode == 1 and "bad.onnx" in proc.stderr, proc.stderr
    proc = ou.run_modex(["serve", f"x={env['models']['a']}", f"x={env['models']['b']}", "--port", "0"])
    assert proc.returncode == 1 and "two models are named 'x'" in proc.stderr, proc.stderr
    proc = ou.run_modex(["serve", env["models"]["a"], "--route", "r=a:0", "--port", "0"])
    assert proc.returncode == 1 and "weight" in proc.stderr, proc.stderr


def test_wrk_short_load(env):
    wrk = shutil.which("wrk")
    assert wrk, "wrk not installed (scripts/install-deps.sh installs it)"
    m = env["models"]
    with Server([f"a={m['a']}", "--threads", "2"], env["work"]) as s:
        e = dict(os.environ, MODEX_WRK_IMAGE=str(env["images"]["photo.jpg"]), MODEX_WRK_TYPE="image/jpeg")
        proc = subprocess.run([wrk, "-t", "2", "-c", "16", "-d", "10s", "--timeout", "10s", "-s", str(WRK_LUA),
                               f"{s.url}/v1/models/a/predict"], capture_output=True, text=True, env=e, timeout=120)
        assert proc.returncode == 0, proc.stderr
        line = next(l for l in proc.stdout.splitlines() if l.startswith("MODEX_WRK_JSON "))
        rep = json.loads(line.split(" ", 1)[1])
        rps = rep["requests"] / (rep["duration_us"] / 1e6)
        print(f"wrk 10 s, 16 connections: {rep['requests']} requests, {rps:.0f} req/s, "
              f"p50 {rep['latency_us']['p50'] / 1000:.1f} ms, p99 {rep['latency_us']['p99'] / 1000:.1f} ms")
        assert rep["requests"] > 100
        assert rep["non2xx"] == 0 and all(v == 0 for v in rep["errors"].values()), rep
        ms = metrics(s)
        # wrk stops counting at the deadline; the server may answer a few more.
        assert metric(ms, "modex_predict_requests_total", model="a", code="200") >= rep["requests"]
        # Requests wrk abandoned at its deadline finish (or fail to write) shortly after.
        deadline = time.monotonic() + 10
        while metric(metrics(s), "modex_http_in_flight_requests") != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert metric(metrics(s), "modex_http_in_flight_requests") == 0
