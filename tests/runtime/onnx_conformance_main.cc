// ONNX backend conformance: runs the upstream ONNX backend tests (Debian's libonnx-testdata:
// data/{node,pytorch-converted,pytorch-operator,simple}/test_*/) through onnx_io::import_onnx and
// modex::Model on both backends (kAuto: fast kernels, kReference), and compares with the expected
// outputs like ONNX's own backend runner (float: |got - want| <= atol + rtol * |want| with
// rtol 1e-3, atol 1e-7; integers and bools exactly).
//
//   onnx_conformance [--data DIR] [--filter SUBSTR] [--json] [--list-passing] [--check EXPECTED]
//                    [--verbose]
//
// Each test runs in a forked child (with a time limit), so even a kernel that crashes is
// reported as one failing test rather than ending the run.
//
// How inputs are fed: the engine takes float tensors only, and the importer needs shape-like
// inputs (Reshape's shape, Pad's pads...) as constants. A test is first tried "live": float inputs
// are fed at run time, other inputs are frozen into the model as initializers. If import or
// planning refuses that, it is retried "frozen": every input after the first becomes an
// initializer (the form weights take in a classifier), and last "folded": every input becomes an
// initializer, so the importer evaluates the graph itself (how modex supports Gather, Slice and
// the other shape ops: on constants). Both backends must pass every data set.
//
// Statuses: pass; fail (wrong numbers or shapes: the max difference is printed); fast_differs
// (the reference passes, the fast backend does not: a fast-kernel bug); unsupported (import or
// planning refused with a modex Error: its message is kept); error (any other exception, a
// modex Error at run time, a crash or a timeout).
#include <onnx/onnx_pb.h>
#include <onnx/version_converter/convert.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "io/onnx/onnx_reader.h"
#include "io/onnx/reader_tensor.h"
#include "modex/runtime.h"

namespace fs = std::filesystem;
using modex::DType;
using modex::Tensor;

namespace {

constexpr const char* kDefaultDataDir = "/usr/share/libonnx-testdata/data";
constexpr const char* kSuites[] = {"node", "pytorch-converted", "pytorch-operator", "simple"};
constexpr double kRtol = 1e-3, kAtol = 1e-7;
constexpr unsigned kTestTimeLimitSeconds = 120;
constexpr int kConvertToOpset = 13;

// The CNN op set modex imports; the coverage table must show each with a passing test.
const char* const kCnnOps[] = {"Conv",        "BatchNormalization", "Relu",      "Clip",        "LeakyRelu",
                               "PRelu",       "Sigmoid",            "HardSigmoid", "HardSwish", "Add",
                               "Sub",         "Mul",                "Div",       "GlobalAveragePool", "AveragePool",
                               "MaxPool",     "Flatten",            "Reshape",   "Squeeze",     "Unsqueeze",
                               "Transpose",   "Concat",             "Pad",       "Gemm",        "MatMul",
                               "Softmax",     "ReduceMean",         "Constant",  "Identity",    "Dropout",
                               "Tanh",        "Shape",              "Gather"};

struct Result {
  std::string suite, name;
  std::set<std::string> ops;
  std::string status;   // pass / fail / fast_differs / unsupported / error
  std::string mode;     // live / frozen (how inputs were fed), "" when never planned
  std::string message;  // why it did not pass
  double max_diff = 0;  // largest |got - want| seen (reference backend; fast for fast_differs)
  double seconds = 0;
  int converted_from = 0;  // the model's opset when it was version-converted, else 0
  std::string id() const { return suite + "/" + name; }
};

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + p.string());
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

onnx::TensorProto read_proto(const fs::path& p) {
  onnx::TensorProto proto;
  if (!proto.ParseFromString(read_file(p))) throw std::runtime_error("cannot parse " + p.string() + " as TensorProto");
  return proto;
}

// ONNX 1.12's test data stores bfloat16 tensors as UINT16 holding the bit patterns: read them as
// the bfloat16 the model declares.
void fix_bfloat16(onnx::TensorProto& proto, const onnx::ValueInfoProto& declared) {
  if (proto.data_type() == onnx::TensorProto::UINT16 && declared.type().has_tensor_type() &&
      declared.type().tensor_type().elem_type() == onnx::TensorProto::BFLOAT16)
    proto.set_data_type(onnx::TensorProto::BFLOAT16);
}

std::vector<fs::path> numbered(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> out;
  for (int i = 0;; ++i) {
    fs::path p = dir / (prefix + std::to_string(i) + ".pb");
    if (!fs::exists(p)) break;
    out.push_back(p);
  }
  return out;
}

std::string one_line(std::string s);

struct DataSet {
  std::vector<onnx::TensorProto> input_protos;
  std::vector<Tensor> inputs, outputs;
};

// The graph inputs that test data feeds: declared inputs that are not initializers.
std::vector<int> fed_inputs(const onnx::GraphProto& g) {
  std::set<std::string> inits;
  for (const auto& t : g.initializer()) inits.insert(t.name());
  std::vector<int> out;
  for (int i = 0; i < g.input_size(); ++i)
    if (!inits.count(g.input(i).name())) out.push_back(i);
  return out;
}

bool float_type(int32_t onnx_type) {
  auto d = modex::onnx_io::reader::dtype_from_onnx(onnx_type);
  return d && modex::is_float(*d);
}

struct Comparison {
  bool ok = true;
  double max_diff = 0;
  std::string message;
};

Comparison compare(const std::vector<Tensor>& want, const std::vector<Tensor>& got) {
  Comparison c;
  if (want.size() != got.size()) {
    c.ok = false;
    c.message = "expected " + std::to_string(want.size()) + " outputs, got " + std::to_string(got.size());
    return c;
  }
  for (size_t o = 0; o < want.size(); ++o) {
    if (want[o].shape() != got[o].shape()) {
      c.ok = false;
      c.message = "output " + std::to_string(o) + ": shape " + modex::dims_to_string(got[o].shape()) + ", expected " +
                  modex::dims_to_string(want[o].shape());
      return c;
    }
    bool exact = !modex::is_float(want[o].dtype());
    for (int64_t i = 0; i < want[o].numel(); ++i) {
      double w = modex::onnx_io::reader::float_element(want[o], i);
      double g = modex::onnx_io::reader::float_element(got[o], i);
      if (std::isnan(w) && std::isnan(g)) continue;
      if (std::isinf(w) && w == g) continue;
      double d = std::abs(g - w);
      bool bad = exact ? !(d == 0) : !(d <= kAtol + kRtol * std::abs(w));
      if (std::isnan(d)) d = INFINITY;
      if (d > c.max_diff) c.max_diff = d;
      if (bad && c.ok) {
        c.ok = false;
        char buf[200];
        std::snprintf(buf, sizeof buf, "output %zu element %lld: got %.9g, expected %.9g", o, static_cast<long long>(i), g, w);
        c.message = buf;
      }
    }
  }
  if (!c.ok) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " (max |diff| %.3g)", c.max_diff);
    c.message += buf;
  }
  return c;
}

// The model with the chosen inputs turned into initializers (values from the data set).
std::string model_bytes(const onnx::ModelProto& model, const std::vector<int>& fed, const DataSet& ds,
                        const std::vector<bool>& freeze) {
  onnx::ModelProto m = model;
  onnx::GraphProto* g = m.mutable_graph();
  std::set<int> drop;
  for (size_t k = 0; k < fed.size(); ++k) {
    if (!freeze[k]) continue;
    onnx::TensorProto* t = g->add_initializer();
    *t = ds.input_protos[k];
    t->set_name(g->input(fed[k]).name());
    drop.insert(fed[k]);
  }
  google::protobuf::RepeatedPtrField<onnx::ValueInfoProto> kept;
  for (int i = 0; i < g->input_size(); ++i)
    if (!drop.count(i)) *kept.Add() = g->input(i);
  g->mutable_input()->Swap(&kept);
  std::string out;
  m.SerializeToString(&out);
  return out;
}

// Outcome of one backend on one test.
struct BackendOutcome {
  std::string status;  // pass / fail / unsupported / error
  std::string mode, message;
  double max_diff = 0;
};

BackendOutcome run_backend(const onnx::ModelProto& model, const fs::path& dir, const std::vector<DataSet>& sets,
                           modex::Backend backend) {
  BackendOutcome out;
  std::vector<int> fed = fed_inputs(model.graph());
  for (const DataSet& ds : sets) {
    if (ds.inputs.size() != fed.size()) {
      out.status = "error";
      out.message = "test data has " + std::to_string(ds.inputs.size()) + " inputs, the model " + std::to_string(fed.size());
      return out;
    }
    // live: float inputs fed at run time; frozen: everything after the first input constant.
    std::vector<bool> live(fed.size()), frozen(fed.size());
    for (size_t k = 0; k < fed.size(); ++k) {
      const auto& type = model.graph().input(fed[k]).type();
      live[k] = !(type.has_tensor_type() && float_type(type.tensor_type().elem_type()));
      frozen[k] = k > 0 || live[k];
    }
    std::vector<std::pair<std::string, std::vector<bool>>> attempts = {{"live", live}};
    if (frozen != live) attempts.push_back({"frozen", frozen});
    // folded: every input constant, so the importer evaluates the graph (how Gather, Slice,
    // Shape... on constants are supported); the engine then has nothing left to compute.
    std::vector<bool> folded(fed.size(), true);
    if (!fed.empty() && folded != frozen) attempts.push_back({"folded", folded});
    std::shared_ptr<modex::Model> m;
    std::vector<Tensor> feed;
    std::string refused;
    for (const auto& [mode, freeze] : attempts) {
      try {
        std::string bytes = model_bytes(model, fed, ds, freeze);
        modex::onnx_io::OnnxImportOptions opts;
        opts.external_data_dir = dir;
        modex::ir::Graph g = modex::onnx_io::import_onnx_from_memory(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                                     bytes.size(), (dir / "model.onnx").string(), opts);
        m = modex::Model::from_graph(g, {.threads = 1, .backend = backend});
        out.mode = mode;
        feed.clear();
        for (size_t k = 0; k < fed.size(); ++k)
          if (!freeze[k]) feed.push_back(ds.inputs[k]);
        break;
      } catch (const modex::Error& e) {
        if (refused.empty()) refused = e.what();  // the live attempt's reason is the informative one
      }
    }
    if (!m) {
      out.status = "unsupported";
      out.message = refused;
      return out;
    }
    std::vector<Tensor> got;
    try {
      got = m->run(feed);
    } catch (const modex::Error& e) {
      out.status = "error";
      out.message = std::string("run: ") + e.what();
      return out;
    }
    Comparison c = compare(ds.outputs, got);
    out.max_diff = std::max(out.max_diff, c.max_diff);
    if (!c.ok) {
      out.status = "fail";
      out.message = c.message;
      return out;
    }
  }
  out.status = "pass";
  return out;
}

Result run_test(const std::string& suite, const fs::path& dir) {
  Result r;
  r.suite = suite;
  r.name = dir.filename().string();
  auto t0 = std::chrono::steady_clock::now();
  try {
    onnx::ModelProto model;
    std::string bytes = read_file(dir / "model.onnx");
    if (!model.ParseFromString(bytes)) throw std::runtime_error("cannot parse model.onnx");
    for (const auto& n : model.graph().node()) r.ops.insert(n.op_type());
    // A model older than the importer's opsets is converted first with ONNX's own version
    // converter, as the importer's error hint tells users to do.
    int opset = 0;
    for (const auto& e : model.opset_import())
      if (e.domain().empty() || e.domain() == "ai.onnx") opset = static_cast<int>(e.version());
    if (opset > 0 && opset < modex::onnx_io::kMinImportOpset) {
      try {
        onnx::ModelProto converted = onnx::version_conversion::ConvertVersion(model, kConvertToOpset);
        model = std::move(converted);
        r.converted_from = opset;
      } catch (const std::exception& e) {
        r.status = "unsupported";
        r.message = "opset " + std::to_string(opset) + " is not supported and ONNX's version converter failed: " +
                    one_line(e.what());
        return r;
      }
    }
    for (const auto* list : {&model.graph().input(), &model.graph().output()})
      for (const auto& v : *list)
        if (!v.type().has_tensor_type()) {
          r.status = "unsupported";
          r.message = "'" + v.name() + "' is not a tensor (sequence, optional and map values are not supported)";
          return r;
        }
    std::vector<fs::path> set_dirs;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_directory() && e.path().filename().string().rfind("test_data_set_", 0) == 0) set_dirs.push_back(e.path());
    std::sort(set_dirs.begin(), set_dirs.end());
    std::vector<DataSet> sets;
    try {
      const std::vector<int> fed = fed_inputs(model.graph());
      for (const fs::path& sd : set_dirs) {
        DataSet ds;
        for (const fs::path& p : numbered(sd, "input_")) {
          onnx::TensorProto proto = read_proto(p);
          size_t k = ds.inputs.size();
          if (k < fed.size()) fix_bfloat16(proto, model.graph().input(fed[k]));
          ds.inputs.push_back(modex::onnx_io::reader::tensor_from_proto(proto, sd));
          ds.input_protos.push_back(std::move(proto));
        }
        for (const fs::path& p : numbered(sd, "output_")) {
          onnx::TensorProto proto = read_proto(p);
          int k = static_cast<int>(ds.outputs.size());
          if (k < model.graph().output_size()) fix_bfloat16(proto, model.graph().output(k));
          ds.outputs.push_back(modex::onnx_io::reader::tensor_from_proto(proto, sd));
        }
        sets.push_back(std::move(ds));
      }
    } catch (const modex::Error& e) {
      if (e.kind() != modex::ErrorKind::kUnsupported) throw;
      r.status = "unsupported";
      r.message = std::string("test data: ") + e.what();
      return r;
    }
    if (sets.empty()) throw std::runtime_error("no test_data_set_*");
    // The engine computes in float32: float64 data beyond its range cannot be reproduced.
    for (const DataSet& ds : sets)
      for (const auto* list : {&ds.inputs, &ds.outputs})
        for (const Tensor& t : *list)
          if (t.dtype() == DType::kFloat64)
            for (double v : t.values<double>())
              if (std::isfinite(v) && std::abs(v) > std::numeric_limits<float>::max()) {
                r.status = "unsupported";
                r.message = "float64 test data beyond float32 range (modex computes in float32)";
                return r;
              }
    BackendOutcome ref = run_backend(model, dir, sets, modex::Backend::kReference);
    r.mode = ref.mode;
    r.max_diff = ref.max_diff;
    if (ref.status != "pass") {
      r.status = ref.status;
      r.message = ref.message;
    } else {
      BackendOutcome fast = run_backend(model, dir, sets, modex::Backend::kAuto);
      if (fast.status == "pass") {
        r.status = "pass";
      } else {
        r.status = "fast_differs";
        r.message = "fast backend " + fast.status + ": " + fast.message;
        r.max_diff = fast.max_diff;
      }
    }
  } catch (const modex::Error& e) {
    r.status = "error";
    r.message = e.what();
  } catch (const std::exception& e) {
    r.status = "error";
    r.message = std::string("exception: ") + e.what();
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

// --- running each test in a child process ---

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\t', ' ');
  return s;
}

Result run_isolated(const std::string& suite, const fs::path& dir) {
  int fds[2];
  if (pipe(fds) != 0) return run_test(suite, dir);
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return run_test(suite, dir);
  }
  if (pid == 0) {
    close(fds[0]);
    alarm(kTestTimeLimitSeconds);
    Result r = run_test(suite, dir);
    std::ostringstream s;
    s.precision(17);
    s << r.status << '\t' << r.mode << (r.converted_from ? "+opset" + std::to_string(r.converted_from) : "") << '\t'
      << r.max_diff << '\t' << r.seconds << '\t' << one_line(r.message) << '\t';
    for (const auto& op : r.ops) s << op << ' ';
    std::string text = s.str();
    size_t at = 0;
    while (at < text.size()) {
      ssize_t n = write(fds[1], text.data() + at, text.size() - at);
      if (n <= 0) break;
      at += static_cast<size_t>(n);
    }
    close(fds[1]);
    _exit(0);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  Result r;
  r.suite = suite;
  r.name = dir.filename().string();
  std::vector<std::string> f;
  std::stringstream ss(text);
  for (std::string part; std::getline(ss, part, '\t');) f.push_back(part);
  if (f.size() >= 5) {
    r.status = f[0];
    r.mode = f[1];
    r.max_diff = std::strtod(f[2].c_str(), nullptr);
    r.seconds = std::strtod(f[3].c_str(), nullptr);
    r.message = f[4];
    if (f.size() >= 6) {
      std::stringstream os(f[5]);
      for (std::string op; os >> op;) r.ops.insert(op);
    }
  } else {
    r.status = "error";
    if (WIFSIGNALED(wstatus))
      r.message = WTERMSIG(wstatus) == SIGALRM ? "timed out after " + std::to_string(kTestTimeLimitSeconds) + " s"
                                                : std::string("crashed: ") + strsignal(WTERMSIG(wstatus));
    else
      r.message = "child exited with status " + std::to_string(WEXITSTATUS(wstatus)) + " without a result";
  }
  return r;
}

// --- reporting ---

std::set<std::string> read_expected(const fs::path& p) {
  std::ifstream f(p);
  if (!f) throw std::runtime_error("cannot read expected list " + p.string());
  std::set<std::string> out;
  for (std::string line; std::getline(f, line);) {
    auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::stringstream s(line);
    std::string name;
    if (s >> name) out.insert(name);
  }
  return out;
}

void print_summary(const std::vector<Result>& results, bool verbose) {
  std::map<std::string, std::map<std::string, int>> by_suite;
  for (const Result& r : results) {
    ++by_suite[r.suite][r.status];
    ++by_suite[r.suite]["total"];
  }
  std::printf("== Failures, errors and fast-backend differences ==\n");
  for (const Result& r : results)
    if (r.status == "fail" || r.status == "error" || r.status == "fast_differs")
      std::printf("%-13s %-60s %s\n", r.status.c_str(), r.id().c_str(), r.message.c_str());
  if (verbose) {
    std::printf("\n== Unsupported ==\n");
    for (const Result& r : results)
      if (r.status == "unsupported") std::printf("%-60s %s\n", r.id().c_str(), r.message.c_str());
  }

  std::printf("\n== Node tests per op type (a test counts for every op its model holds) ==\n");
  std::printf("%-28s %5s %5s %5s %5s %5s %5s\n", "op", "pass", "fail", "fastd", "unsup", "error", "total");
  std::map<std::string, std::map<std::string, int>> by_op;
  for (const Result& r : results) {
    if (r.suite != "node") continue;
    for (const auto& op : r.ops) {
      ++by_op[op][r.status];
      ++by_op[op]["total"];
    }
  }
  for (auto& [op, c] : by_op)
    std::printf("%-28s %5d %5d %5d %5d %5d %5d\n", op.c_str(), c["pass"], c["fail"], c["fast_differs"], c["unsupported"],
                c["error"], c["total"]);

  std::printf("\n== CNN op set coverage: passing tests holding each op (node / all suites) ==\n");
  std::vector<std::string> uncovered;
  for (const char* op : kCnnOps) {
    int node = 0, all = 0;
    for (const Result& r : results)
      if (r.status == "pass" && r.ops.count(op)) {
        ++all;
        if (r.suite == "node") ++node;
      }
    std::printf("%-20s %4d / %4d\n", op, node, all);
    if (all == 0) uncovered.push_back(op);
  }
  if (uncovered.empty()) {
    std::printf("every op of the CNN op set has a passing test\n");
  } else {
    std::printf("ops without a passing test:");
    for (const auto& op : uncovered) std::printf(" %s", op.c_str());
    std::printf("\n");
  }

  std::printf("\n== Summary ==\n");
  std::printf("%-18s %5s %5s %5s %5s %5s %5s\n", "suite", "pass", "fail", "fastd", "unsup", "error", "total");
  int pass = 0, total = 0;
  for (auto& [suite, c] : by_suite) {
    std::printf("%-18s %5d %5d %5d %5d %5d %5d\n", suite.c_str(), c["pass"], c["fail"], c["fast_differs"], c["unsupported"],
                c["error"], c["total"]);
    pass += c["pass"];
    total += c["total"];
  }
  std::printf("passed %d / %d\n", pass, total);
}

nlohmann::ordered_json to_json(const std::vector<Result>& results) {
  nlohmann::ordered_json j;
  std::map<std::string, std::map<std::string, int>> by_suite;
  for (const Result& r : results) {
    ++by_suite[r.suite][r.status];
    ++by_suite[r.suite]["total"];
  }
  j["suites"] = by_suite;
  nlohmann::ordered_json coverage;
  for (const char* op : kCnnOps) {
    int n = 0;
    for (const Result& r : results) n += r.status == "pass" && r.ops.count(op);
    coverage[op] = n;
  }
  j["cnn_op_coverage"] = coverage;
  j["tests"] = nlohmann::ordered_json::array();
  for (const Result& r : results) {
    nlohmann::ordered_json t;
    t["test"] = r.id();
    t["status"] = r.status;
    t["ops"] = r.ops;
    if (!r.mode.empty()) t["mode"] = r.mode;
    if (!r.message.empty()) t["message"] = r.message;
    if (r.status == "fail" || r.status == "fast_differs") t["max_diff"] = r.max_diff;
    t["seconds"] = r.seconds;
    j["tests"].push_back(t);
  }
  return j;
}

int usage() {
  std::fprintf(stderr,
               "usage: onnx_conformance [--data DIR] [--filter SUBSTR] [--json] [--list-passing] [--check EXPECTED.txt] "
               "[--verbose]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path data = std::getenv("MODEX_ONNX_TESTDATA") ? fs::path(std::getenv("MODEX_ONNX_TESTDATA")) : fs::path(kDefaultDataDir);
  std::string filter, check;
  bool json = false, list_passing = false, verbose = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--data") data = value();
      else if (a == "--filter") filter = value();
      else if (a == "--check") check = value();
      else if (a == "--json") json = true;
      else if (a == "--list-passing") list_passing = true;
      else if (a == "--verbose" || a == "-v") verbose = true;
      else return usage();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return usage();
    }
  }
  if (!fs::is_directory(data / "node")) {
    std::fprintf(stderr,
                 "onnx_conformance: %s/node not found: install the ONNX backend test data "
                 "(apt-get install libonnx-testdata, see scripts/install-deps.sh) or set MODEX_ONNX_TESTDATA\n",
                 data.string().c_str());
    return 2;
  }

  auto t0 = std::chrono::steady_clock::now();
  std::vector<Result> results;
  for (const char* suite : kSuites) {
    fs::path sd = data / suite;
    if (!fs::is_directory(sd)) continue;
    std::vector<fs::path> dirs;
    for (const auto& e : fs::directory_iterator(sd))
      if (e.is_directory() && e.path().filename().string().rfind("test_", 0) == 0 && fs::exists(e.path() / "model.onnx"))
        dirs.push_back(e.path());
    std::sort(dirs.begin(), dirs.end());
    for (const fs::path& d : dirs) {
      std::string id = std::string(suite) + "/" + d.filename().string();
      if (!filter.empty() && id.find(filter) == std::string::npos) continue;
      results.push_back(run_isolated(suite, d));
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (json) {
    auto j = to_json(results);
    j["seconds"] = seconds;
    std::cout << j.dump(1) << "\n";
  } else if (list_passing) {
    for (const Result& r : results)
      if (r.status == "pass") std::printf("%s\n", r.id().c_str());
  } else {
    print_summary(results, verbose);
    std::printf("ran %zu tests in %.1f s\n", results.size(), seconds);
  }

  if (check.empty()) return 0;
  std::set<std::string> expected;
  try {
    expected = read_expected(check);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  std::map<std::string, const Result*> by_id;
  for (const Result& r : results) by_id[r.id()] = &r;
  int regressions = 0;
  for (const std::string& id : expected) {
    if (!filter.empty() && id.find(filter) == std::string::npos) continue;
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      std::fprintf(stderr, "REGRESSION %s: listed as passing but not found in %s\n", id.c_str(), data.string().c_str());
      ++regressions;
    } else if (it->second->status != "pass") {
      std::fprintf(stderr, "REGRESSION %s: %s: %s\n", id.c_str(), it->second->status.c_str(), it->second->message.c_str());
      ++regressions;
    }
  }
  int fresh = 0;
  for (const Result& r : results)
    if (r.status == "pass" && !expected.count(r.id())) {
      if (fresh++ == 0) std::fprintf(stderr, "newly passing (add to %s):\n", check.c_str());
      std::fprintf(stderr, "  %s\n", r.id().c_str());
    }
  std::fprintf(stderr, "check: %zu expected, %d regressions, %d newly passing\n", expected.size(), regressions, fresh);
  return regressions ? 1 : 0;
}
