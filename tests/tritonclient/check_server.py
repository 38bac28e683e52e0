"""tensorlet serve, checked with NVIDIA's own client library (`tritonclient`).

Run by `tests/tritonclient.rs` (which installs `tritonclient[http,grpc]` and numpy into the
project-local virtualenv target/venv-triton and starts the server) as

    python check_server.py --http HOST:PORT [--grpc HOST:PORT] --metrics HOST:PORT
                           --models DIR --deploy DIR

`--models` is the repository the server serves, whose `mlp` and `mnist-cnn` version 1 weights (`DIR/<model>/1/
weights.safetensors`); expected outputs are computed from them by the independent numpy
reference (tests/reference/reference.py), never by tensorlet. `--deploy` is a packed
`mlp` version folder (function.wasm, weights.safetensors) that the repository checks
upload through `load_model(files=...)`.

Every check runs over both protocols given; the script prints one line per check and
exits 1 if any failed.
"""

import argparse
import os
import sys
import traceback
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import reference  # noqa: E402

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

RTOL, ATOL = 1e-4, 1e-6
# The gRPC code of each HTTP status the checks expect (Triton's mapping).
GRPC_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 503: "UNAVAILABLE"}


def close(actual, expected, what):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, "%s: shape %s, expected %s" % (what, actual.shape, expected.shape)
    err = np.abs(actual - expected)
    assert np.all(err <= ATOL + RTOL * np.abs(expected)), "%s: max abs error %g\n%s\n%s" % (
        what, err.max(), actual, expected)


class Checks:
    def __init__(self, kind, client, module, args):
        self.kind, self.client, self.m, self.args = kind, client, module, args
        self.weights = {
            name: reference.st_load(os.path.join(args.models, name, "1", "weights.safetensors"))
            for name in ("mlp", "mnist-cnn")
        }

    # -- health and metadata ------------------------------------------------------------

    def health(self):
        assert self.client.is_server_live()
        assert self.client.is_server_ready()
        assert self.client.is_model_ready("mlp")
        assert self.client.is_model_ready("mnist-cnn", "1")
        assert not self.client.is_model_ready("no-such-model")

    def metadata(self):
        if self.kind == "http":
            server = self.client.get_server_metadata()
            model = self.client.get_model_metadata("mnist-cnn")
            inputs = {i["name"]: i for i in model["inputs"]}
            outputs = {o["name"]: o for o in model["outputs"]}
            name, versions = model["name"], model["versions"]
            server_name = server["name"]
        else:
            server = self.client.get_server_metadata()
            model = self.client.get_model_metadata("mnist-cnn")
            inputs = {i.name: {"datatype": i.datatype, "shape": list(i.shape)} for i in model.inputs}
            outputs = {o.name: {"datatype": o.datatype, "shape": list(o.shape)} for o in model.outputs}
            name, versions = model.name, list(model.versions)
            server_name = server.name
        assert server_name == "tensorlet", server_name
        assert name == "mnist-cnn", name
        assert "1" in versions, versions
        assert inputs["image"]["datatype"] == "FP32", inputs
        assert outputs["probs"]["datatype"] == "FP32", outputs
        assert len(outputs["probs"]["shape"]) == 2, outputs

    def config(self):
        config = self.client.get_model_config("mnist-cnn")
        if self.kind == "grpc":
            config = {"name": config.config.name}
        assert config["name"] == "mnist-cnn", config

    # -- inference ------------------------------------------------------------------------

    def infer(self, model, name, x, datatype="FP32", binary=True, outputs=None, version=""):
        inp = self.m.InferInput(name, list(x.shape), datatype)
        if self.kind == "http":
            inp.set_data_from_numpy(x, binary_data=binary)
            outs = [self.m.InferRequestedOutput(o, binary_data=binary) for o in outputs or []]
        else:
            inp.set_data_from_numpy(x)
            outs = [self.m.InferRequestedOutput(o) for o in outputs or []]
        return self.client.infer(model, [inp], model_version=version, outputs=outs or None,
                                 request_id="req-7")

    def mlp_json_and_binary(self):
        x = np.random.default_rng(3).normal(size=(5, 10)).astype(np.float32)
        want = reference.mlp_forward(self.weights["mlp"], x.astype(np.float64))
        for binary in (False, True):
            result = self.infer("mlp", "x", x, binary=binary)
            close(result.as_numpy("y"), want, "mlp y (binary=%s)" % binary)
            response = result.get_response()
            rid = response["id"] if self.kind == "http" else response.id
            assert rid == "req-7", rid

    def cnn_batch(self):
        x = np.random.default_rng(4).uniform(size=(3, 1, 28, 28)).astype(np.float32)
        want = reference.cnn_forward(self.weights["mnist-cnn"], x.astype(np.float64))
        result = self.infer("mnist-cnn", "image", x, outputs=["probs"], version="1")
        probs = result.as_numpy("probs")
        close(probs, want, "mnist-cnn probs")
        close(probs.sum(axis=1), np.ones(3), "probabilities sum to 1")

    def large_request(self):
        # 1,500 images: 4.7 MB of input, past gRPC's usual 4 MB message limit.
        x = np.random.default_rng(8).uniform(size=(1500, 1, 28, 28)).astype(np.float32)
        probs = self.infer("mnist-cnn", "image", x, outputs=["probs"]).as_numpy("probs")
        want = reference.cnn_forward(self.weights["mnist-cnn"], x[:3].astype(np.float64))
        close(probs[:3], want, "large batch, first rows")
        assert probs.shape == (1500, 10), probs.shape

    def other_datatypes(self):
        # FP16 and INT32 at the edge become the function's FP32.
        x = np.random.default_rng(5).normal(size=(2, 10))
        want = reference.mlp_forward(self.weights["mlp"], x.astype(np.float16).astype(np.float64))
        close(self.infer("mlp", "x", x.astype(np.float16), "FP16").as_numpy("y"), want, "FP16 input")
        xi = np.arange(20, dtype=np.int32).reshape(2, 10) - 10
        want = reference.mlp_forward(self.weights["mlp"], xi.astype(np.float64))
        close(self.infer("mlp", "x", xi, "INT32").as_numpy("y"), want, "INT32 input")

    # -- errors ---------------------------------------------------------------------------

    def expect_error(self, call, status, words):
        try:
            call()
        except InferenceServerException as e:
            text = e.message() or ""
            want = str(status) if self.kind == "http" else "StatusCode." + GRPC_CODES[status]
            assert str(e.status()) == want, "status %s, expected %s: %s" % (e.status(), want, text)
            for w in words:
                assert w in text, "%r not in %r" % (w, text)
            return
        raise AssertionError("expected an error (%s)" % " ".join(words))

    def errors(self):
        x = np.zeros((1, 10), np.float32)
        self.expect_error(lambda: self.infer("no-such-model", "x", x), 404, ["no-such-model"])
        self.expect_error(lambda: self.infer("mlp", "x", x, version="9"), 404, ["9"])
        self.expect_error(lambda: self.infer("mlp", "nope", x), 400, ["nope"])
        self.expect_error(lambda: self.infer("mlp", "x", np.zeros((1, 7), np.float32)), 400, ["x"])
        self.expect_error(lambda: self.client.get_model_metadata("no-such-model"), 404, ["no-such-model"])

    # -- repository -----------------------------------------------------------------------

    def repository(self):
        index = self.client.get_model_repository_index()
        if self.kind == "grpc":
            index = [{"name": m.name, "version": m.version, "state": m.state} for m in index.models]
        names = sorted({m["name"] for m in index})
        assert names == ["mlp", "mnist-cnn"], index
        x = np.random.default_rng(6).normal(size=(2, 10)).astype(np.float32)

        self.client.unload_model("mlp")
        assert not self.client.is_model_ready("mlp")
        self.expect_error(lambda: self.infer("mlp", "x", x), 404, ["mlp"])
        self.client.load_model("mlp")
        assert self.client.is_model_ready("mlp")

        # Deploy the packed folder as a new version (2 over HTTP, 3 over gRPC); with
        # `latest 1` it replaces what served before.
        version = {"http": 2, "grpc": 3}[self.kind]
        folder = self.args.deploy
        files = {}
        for f in ("function.wasm", "weights.safetensors"):
            with open(os.path.join(folder, f), "rb") as fh:
                files["file:%d/%s" % (version, f)] = fh.read()
        self.client.load_model("mlp", config='{"version_policy": {"latest": {"num_versions": 1}}}',
                               files=files)
        assert self.client.is_model_ready("mlp", str(version))
        deployed = reference.st_load(os.path.join(folder, "weights.safetensors"))
        want = reference.mlp_forward(deployed, x.astype(np.float64))
        close(self.infer("mlp", "x", x).as_numpy("y"), want, "deployed version %d" % version)

        # A broken upload is refused and the deployed version keeps serving.
        bad = {"file:9/function.wasm": b"\0asm broken",
               "file:9/weights.safetensors": files["file:%d/weights.safetensors" % version]}
        self.expect_error(lambda: self.client.load_model("mlp", files=bad), 400, ["function.wasm"])
        assert not self.client.is_model_ready("mlp", "9")
        close(self.infer("mlp", "x", x).as_numpy("y"), want, "version %d after a failed load" % version)

        # A configuration alone: back to serving version 1 only, as the other checks expect.
        self.client.load_model("mlp", config='{"version_policy": {"specific": {"versions": [1]}}}')
        assert self.client.is_model_ready("mlp", "1")
        assert not self.client.is_model_ready("mlp", str(version))
        want = reference.mlp_forward(self.weights["mlp"], x.astype(np.float64))
        close(self.infer("mlp", "x", x).as_numpy("y"), want, "version 1 again")

    # -- statistics -----------------------------------------------------------------------

    def statistics(self):
        stats = self.client.get_inference_statistics("mnist-cnn")
        if self.kind == "grpc":
            entries = [{"name": s.name, "success": s.inference_stats.success.count} for s in stats.model_stats]
        else:
            entries = [{"name": s["name"], "success": s["inference_stats"]["success"]["count"]}
                       for s in stats["model_stats"]]
        assert entries and entries[0]["name"] == "mnist-cnn", entries
        assert entries[0]["success"] >= 1, entries


def metrics_text(addr):
    with urllib.request.urlopen("http://%s/metrics" % addr, timeout=10) as r:
        return r.read().decode()


def counter(text, name, model):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and 'model="%s"' % model in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def check_tokens(args):
    """A server with an admin and an invoke token: over both protocols, inference needs the
    invoke token, the repository the admin token; none is 401 / UNAUTHENTICATED, a wrong one
    403 / PERMISSION_DENIED."""
    admin, invoke = open(args.admin_token).read().strip(), open(args.invoke_token).read().strip()
    bearer = lambda t: {"authorization": "Bearer " + t}  # noqa: E731
    failed = 0
    suites = [("http", httpclient.InferenceServerClient(args.http), httpclient),
              ("grpc", grpcclient.InferenceServerClient(args.grpc), grpcclient)]
    for kind, client, module in suites:
        checks = Checks(kind, client, module, args)
        x = np.random.default_rng(9).normal(size=(2, 10)).astype(np.float32)
        want = reference.mlp_forward(checks.weights["mlp"], x.astype(np.float64))

        def infer(headers):
            inp = module.InferInput("x", [2, 10], "FP32")
            inp.set_data_from_numpy(x)
            return client.infer("mlp", [inp], headers=headers).as_numpy("y")

        codes = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}

        def refused(call, status, what):
            try:
                call()
            except InferenceServerException as e:
                expect = str(status) if kind == "http" else "StatusCode." + codes[status]
                assert str(e.status()) == expect, "%s: %s, expected %s: %s" % (what, e.status(), expect, e.message())
                return
            raise AssertionError("%s was allowed" % what)

        cases = [
            ("infer without a token", lambda: refused(lambda: infer(None), 401, "infer without a token")),
            ("infer with a wrong token", lambda: refused(lambda: infer(bearer("wrong")), 403, "a wrong token")),
            ("infer with the invoke token", lambda: close(infer(bearer(invoke)), want, "invoke token")),
            ("infer with the admin token", lambda: close(infer(bearer(admin)), want, "admin token")),
            ("health needs no token", lambda: client.is_server_ready() or (_ for _ in ()).throw(AssertionError())),
            ("index without a token", lambda: refused(lambda: client.get_model_repository_index(), 401, "index")),
            ("index with the invoke token",
             lambda: refused(lambda: client.get_model_repository_index(headers=bearer(invoke)), 403, "index")),
            ("unload with the invoke token",
             lambda: refused(lambda: client.unload_model("mlp", headers=bearer(invoke)), 403, "unload")),
            ("load with the admin token", lambda: client.load_model("mlp", headers=bearer(admin))),
        ]
        for name, case in cases:
            try:
                case()
                print("ok   %s tokens: %s" % (kind, name))
            except Exception:  # noqa: BLE001
                failed += 1
                print("FAIL %s tokens: %s\n%s" % (kind, name, traceback.format_exc()))
    return 1 if failed else 0


def check_tls(args):
    """A TLS server: both clients trusting its certificate get the reference answers; a
    plain-text client gets nothing."""
    cert = args.tls_cert
    suites = [
        ("https", httpclient.InferenceServerClient(args.http, ssl=True, ssl_options={"ca_certs": cert}),
         httpclient),
        ("grpcs", grpcclient.InferenceServerClient(args.grpc, ssl=True, root_certificates=cert), grpcclient),
    ]
    failed = 0
    for kind, client, module in suites:
        checks = Checks("http" if kind == "https" else "grpc", client, module, args)
        for name in ("health", "mlp_json_and_binary", "cnn_batch"):
            try:
                getattr(checks, name)()
                print("ok   %s %s" % (kind, name))
            except Exception:  # noqa: BLE001
                failed += 1
                print("FAIL %s %s\n%s" % (kind, name, traceback.format_exc()))
    try:
        httpclient.InferenceServerClient(args.http, connection_timeout=5, network_timeout=5).is_server_live()
        failed += 1
        print("FAIL plain-text HTTP to the TLS port was answered")
    except Exception:  # noqa: BLE001 - any failure is the point
        print("ok   plain-text refused")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", required=True)
    ap.add_argument("--grpc")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--deploy", required=True)
    ap.add_argument("--tls-cert", help="the server speaks TLS with this (self-signed) certificate")
    ap.add_argument("--admin-token", help="file: the server needs this admin token (and --invoke-token)")
    ap.add_argument("--invoke-token", help="file: the server's invoke token")
    args = ap.parse_args()

    if args.tls_cert:
        sys.exit(check_tls(args))
    if args.admin_token:
        sys.exit(check_tokens(args))
    suites = [("http", httpclient.InferenceServerClient(args.http), httpclient)]
    if args.grpc:
        suites.append(("grpc", grpcclient.InferenceServerClient(args.grpc), grpcclient))
    names = ["health", "metadata", "config", "mlp_json_and_binary", "cnn_batch", "large_request",
             "other_datatypes", "errors", "statistics", "repository"]
    failed = 0
    for kind, client, module in suites:
        checks = Checks(kind, client, module, args)
        before = counter(metrics_text(args.metrics), "nv_inference_request_success", "mnist-cnn")
        for name in names:
            try:
                getattr(checks, name)()
                print("ok   %s %s" % (kind, name))
            except Exception:  # noqa: BLE001 - report every failure, then exit 1
                failed += 1
                print("FAIL %s %s\n%s" % (kind, name, traceback.format_exc()))
        # cnn_batch and large_request are the successful mnist-cnn requests of each suite.
        after = counter(metrics_text(args.metrics), "nv_inference_request_success", "mnist-cnn")
        if after - before != 2:
            failed += 1
            print("FAIL %s metrics: mnist-cnn successes went %s -> %s, expected +2" % (kind, before, after))
        else:
            print("ok   %s metrics" % kind)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
