#include "app/serve/server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <span>
#include <thread>

#include "app/serve/dispatcher.h"
#include "app/serve/metrics.h"
#include "app/serve/model_registry.h"
#include "app/serve/request.h"
#include "app/serve/router.h"
#include "core/dtype.h"
#include "core/error.h"
#include "io/image/image.h"
#include "io/image/preprocess.h"

namespace modex::app::serve {
namespace {

using Json = nlohmann::ordered_json;

const char* const kMultipartHeader = "X-Modex-Multipart-Content-Type";

// httplib listens with a backlog of 5: a load balancer or wrk opening 64 connections at once
// overflows it and the dropped handshakes cost seconds of retransmission. Listening again on
// the bound socket raises the backlog (Linux updates it in place).
class HttpServer : public httplib::Server {
 public:
  void widen_backlog() {
    socket_t fd = svr_sock_;
    if (fd != INVALID_SOCKET) ::listen(fd, SOMAXCONN);
  }
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void send_json(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n", "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message, int retry_after = 0) {
  if (retry_after > 0) res.set_header("Retry-After", std::to_string(retry_after));
  send_json(res, status, Json{{"error", message}, {"status", status}});
}

// The endpoint a path belongs to, for metric labels (model names are labels of their own).
std::string endpoint_of(const std::string& method, const std::string& path) {
  if (path == "/healthz" || path == "/readyz" || path == "/metrics" || path == "/v1/models") return path;
  if (path.rfind("/v1/models/", 0) == 0) {
    if (path.size() > 8 && path.ends_with("/predict")) return "/v1/models/{name}/predict";
    if (path.ends_with("/reload")) return "/v1/models/{name}/reload";
    if (path.find('/', 11) == std::string::npos) return "/v1/models/{name}";
  }
  return "other";
}

std::string layout_name(image::Preprocess::Layout l) { return l == image::Preprocess::Layout::kNHWC ? "NHWC" : "NCHW"; }

Json tensor_info_json(const TensorInfo& t) {
  Json dims = Json::array();
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] >= 0) dims.push_back(t.shape[i]);
    else dims.push_back(i < t.dim_names.size() && !t.dim_names[i].empty() ? Json(t.dim_names[i]) : Json(nullptr));
  }
  return {{"name", t.name}, {"dtype", std::string(dtype_name(t.dtype))}, {"shape", dims}};
}

Json model_json(const ModelStatus& s) {
  const LoadedModel& m = *s.current;
  Json j;
  j["name"] = m.name;
  j["path"] = m.path.string();
  j["format"] = m.path.extension().string().empty() ? "" : m.path.extension().string().substr(1);
  j["version"] = m.version;
  j["sha256"] = m.sha256;
  j["loaded_at"] = m.loaded_at;
  Json ins = Json::array(), outs = Json::array();
  for (const auto& t : m.model->inputs()) ins.push_back(tensor_info_json(t));
  for (const auto& t : m.model->outputs()) outs.push_back(tensor_info_json(t));
  j["inputs"] = ins;
  j["outputs"] = outs;
  const image::Preprocess& p = m.preprocess;
  j["preprocessing"] = {{"source", m.preprocess_source},
                        {"size", {p.height, p.width}},
                        {"resize", p.resize == image::Preprocess::Resize::kResize ? "resize" : "resize_center_crop"},
                        {"mean", p.mean},
                        {"std", p.std},
                        {"layout", layout_name(p.layout)}};
  j["class_names"] = m.class_names;
  j["batchable"] = m.dynamic_batch;
  Json meta = Json::object();
  for (const auto& [k, v] : m.model->metadata()) meta[k] = v;
  j["metadata"] = meta;
  j["reloads"] = s.reloads;
  j["failed_reloads"] = s.failed_reloads;
  j["last_reload_error"] = s.last_error.empty() ? Json(nullptr) : Json(s.last_error);
  return j;
}

// Blocks the termination signals in this thread and every thread started after it, so one
// thread can take them with sigwait.
sigset_t block_termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill the server
  return set;
}

class Server {
 public:
  explicit Server(const ServeOptions& o)
      : o_(o),
        registry_({.threads = o.threads}, o.pre),
        dispatcher_({.workers = o.workers,
                     .max_batch = o.max_batch,
                     .batch_timeout = std::chrono::microseconds(static_cast<int64_t>(o.batch_timeout_ms * 1000)),
                     .max_queue = o.max_queue}) {
    declare_metrics();
    for (const auto& spec : o.models) {
      ModelSpec m = parse_model_spec(spec);
      auto t0 = Clock::now();
      registry_.add(m.name, m.path);
      auto loaded = registry_.get(m.name);
      metrics_.set("modex_model_version", {{"model", m.name}}, static_cast<double>(loaded->version));
      std::cerr << fmt::format("modex serve: loaded {} from {} in {:.0f} ms ({}, input {}x{} {}, batch {})\n", m.name,
                               m.path, seconds_since(t0) * 1000, loaded->preprocess_source, loaded->preprocess.height,
                               loaded->preprocess.width, layout_name(loaded->preprocess.layout),
                               loaded->dynamic_batch ? "dynamic" : "fixed");
    }
    for (const auto& spec : o.routes) {
      Route r = parse_route(spec);
      for (const auto& v : r.variants)
        if (!registry_.contains(v.model))
          throw Error(fmt::format("--route '{}': no model is named '{}'", spec, v.model))
              .hint("load it: modex serve NAME=PATH ...");
      if (routers_.count(r.name)) throw Error(fmt::format("--route: two routes are named '{}'", r.name));
      std::string name = r.name;
      routers_.emplace(name, std::make_unique<Router>(std::move(r)));
    }
    registry_.on_reload = [this](const std::string& name, const ReloadResult& r) {
      metrics_.inc("modex_model_reloads_total", {{"model", name}, {"result", r.ok ? "ok" : "error"}});
      metrics_.set("modex_model_version", {{"model", name}}, static_cast<double>(r.version));
      if (r.ok)
        std::cerr << fmt::format("modex serve: reloaded {} (version {})\n", name, r.version);
      else
        std::cerr << fmt::format("modex serve: reload of {} failed, version {} keeps serving: {}\n", name, r.version,
                                 r.error);
    };
    dispatcher_.on_batch = [this](const std::string& model, int n) {
      metrics_.observe("modex_inference_batch_size", {{"model", model}}, n);
    };
    setup_http();
  }

  int run() {
    int port = o_.port;
    if (port == 0) {
      port = http_.bind_to_any_port(o_.host);
      if (port < 0) throw Error(fmt::format("cannot bind to {} (any port)", o_.host), ErrorKind::kIo);
    } else if (!http_.bind_to_port(o_.host, port)) {
      throw Error(fmt::format("cannot listen on {}:{} (in use, or not an address of this machine?)", o_.host, port),
                  ErrorKind::kIo);
    }
    http_.widen_backlog();
    if (o_.watch_ms > 0) registry_.start_watching(std::chrono::milliseconds(o_.watch_ms));
    std::cout << fmt::format("modex serve: listening on http://{}:{}", o_.host, port) << std::endl;
    ready_ = true;
    http_.listen_after_bind();  // returns after stop(), once the connection threads are done
    registry_.stop_watching();
    dispatcher_.shutdown();
    std::cerr << "modex serve: stopped\n";
    return 0;
  }

  // Stop accepting; requests in flight finish (listen_after_bind joins its threads).
  void stop() {
    ready_ = false;
    draining_ = true;
    http_.stop();
  }

 private:
  void declare_metrics() {
    using T = Metrics::Type;
    metrics_.declare("modex_http_requests_total", T::kCounter, "HTTP requests by endpoint and status code.");
    metrics_.declare("modex_http_in_flight_requests", T::kGauge, "HTTP requests being handled now.");
    metrics_.declare("modex_predict_requests_total", T::kCounter,
                     "Prediction requests by requested model (or route), serving variant and status code.");
    metrics_.declare("modex_predict_latency_seconds", T::kHistogram,
                     "Successful prediction latency (upload received to answer) by model and variant.",
                     latency_buckets());
    metrics_.declare("modex_inference_batch_size", T::kHistogram, "Requests per engine call, by model.",
                     {1, 2, 4, 8, 16, 32, 64});
    metrics_.declare("modex_inference_queue_depth", T::kGauge, "Requests waiting for inference.");
    metrics_.declare("modex_model_version", T::kGauge, "The model version serving (1 + successful reloads).");
    metrics_.declare("modex_model_reloads_total", T::kCounter, "Model reload attempts by result.");
    metrics_.set("modex_http_in_flight_requests", {}, 0);
  }

  std::shared_ptr<const LoadedModel> resolve(const std::string& name, std::string& variant) {
    auto r = routers_.find(name);
    variant = r != routers_.end() ? r->second->pick().model : name;
    auto m = registry_.get(variant);
    if (!m) throw HttpError(404, fmt::format("unknown model '{}'; GET /v1/models lists them", name));
    return m;
  }

  Json predict(const httplib::Request& req, const std::string& body, const std::string& name, std::string& variant,
               Clock::time_point start) {
    std::shared_ptr<const LoadedModel> m = resolve(name, variant);
    int top = parse_top(req.get_param_value("top"), o_.top);
    std::string content_type =
        req.has_header(kMultipartHeader) ? req.get_header_value(kMultipartHeader) : req.get_header_value("Content-Type");
    ImageUpload up = extract_image(content_type, body);
    image::Image img;
    std::string label = up.filename.empty() ? "upload" : "upload '" + up.filename + "'";
    try {
      img = image::decode_image(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(up.bytes.data()), up.bytes.size()),
                                label, {.max_pixels = o_.max_pixels});
    } catch (const Error& e) {
      throw HttpError(e.kind() == ErrorKind::kUnsafe ? 413 : 400, e.what());
    }
    Tensor x = image::preprocess(img, m->preprocess);
    img = {};
    auto job = dispatcher_.submit(m, std::move(x), start + std::chrono::milliseconds(o_.timeout_ms));
    InferenceResult r = dispatcher_.wait(job);

    std::vector<float> p = probabilities(r.output.data(), static_cast<int64_t>(r.output.size()));
    std::vector<int64_t> order(p.size());
    std::iota(order.begin(), order.end(), 0);
    size_t k = std::min(static_cast<size_t>(top), order.size());
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                      [&](int64_t a, int64_t b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)]; });
    auto name_of = [&](int64_t c) {
      return c < static_cast<int64_t>(m->class_names.size()) ? Json(m->class_names[static_cast<size_t>(c)]) : Json(nullptr);
    };
    Json j;
    if (p.empty()) throw HttpError(500, fmt::format("model '{}' returned an empty output", m->name));
    j["predicted_class"] = order[0];
    j["class_name"] = name_of(order[0]);
    j["confidence"] = p[static_cast<size_t>(order[0])];
    Json tops = Json::array();
    for (size_t i = 0; i < k; ++i)
      tops.push_back({{"class", order[i]}, {"name", name_of(order[i])}, {"probability", p[static_cast<size_t>(order[i])]}});
    j["top5"] = tops;
    j["model"] = m->name;
    if (variant != name) j["route"] = name;
    j["version"] = m->version;
    j["batch_size"] = r.batch_size;
    j["queue_ms"] = r.queue_ms;
    j["inference_ms"] = r.inference_ms;
    j["latency_ms"] = seconds_since(start) * 1000;
    return j;
  }

  void setup_http() {
    int pool = std::max(1, o_.http_threads);
    http_.new_task_queue = [pool] { return new httplib::ThreadPool(static_cast<size_t>(pool)); };
    http_.set_payload_max_length(o_.max_body);
    http_.set_keep_alive_max_count(1000);
    http_.set_keep_alive_timeout(2);
    http_.set_read_timeout(10);
    http_.set_write_timeout(10);
    http_.set_tcp_nodelay(true);

    // httplib parses multipart/form-data bodies itself and then hands no raw body to handlers;
    // modex parses uploads with its own bounded, fuzzed parser (request.h), so the header is
    // moved aside before routing and read back by the predict handler.
    // Likewise a POST without a body and without Content-Length (`curl -X POST .../reload`),
    // which httplib would refuse with a bare 400, is given an explicit empty body.
    http_.set_pre_routing_handler([](const httplib::Request& req, httplib::Response&) {
      auto& headers = const_cast<httplib::Request&>(req).headers;  // the server's own, mutable object
      if (media_type(req.get_header_value("Content-Type")) == "multipart/form-data") {
        std::string value = req.get_header_value("Content-Type");
        headers.erase("Content-Type");
        headers.emplace(kMultipartHeader, value);
      }
      if (req.method == "POST" && !req.has_header("Content-Length") && !req.has_header("Transfer-Encoding"))
        headers.emplace("Content-Length", "0");
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http_.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, {{"status", "ok"}}); });
    http_.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      if (ready_ && !draining_)
        send_json(res, 200, {{"status", "ready"}, {"models", registry_.names()}});
      else
        send_json(res, 503, {{"status", draining_ ? "shutting down" : "starting"}});
    });
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      metrics_.set("modex_inference_queue_depth", {}, static_cast<double>(dispatcher_.queued()));
      res.set_content(metrics_.render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    http_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      Json models = Json::array();
      for (const auto& name : registry_.names()) models.push_back(model_json(registry_.status(name)));
      Json routes = Json::array();
      for (const auto& [name, router] : routers_) {
        Json vs = Json::array();
        for (const auto& v : router->route().variants) vs.push_back({{"model", v.model}, {"weight", v.weight}});
        routes.push_back({{"name", name}, {"variants", vs}});
      }
      send_json(res, 200, {{"models", models}, {"routes", routes}});
    });
    http_.Get(R"(/v1/models/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      std::string name = req.matches[1];
      if (!registry_.contains(name)) return send_error(res, 404, fmt::format("unknown model '{}'", name));
      send_json(res, 200, model_json(registry_.status(name)));
    });
    http_.Post(R"(/v1/models/([^/]+)/reload)", [this](const httplib::Request& req, httplib::Response& res) {
      std::string name = req.matches[1];
      if (!registry_.contains(name)) return send_error(res, 404, fmt::format("unknown model '{}'", name));
      ReloadResult r = registry_.reload(name);
      if (r.ok)
        send_json(res, 200, {{"model", name}, {"reloaded", true}, {"version", r.version}});
      else
        send_json(res, 500, {{"error", r.error}, {"status", 500}, {"model", name}, {"reloaded", false},
                             {"version", r.version}});
    });
    http_.Post(R"(/v1/models/([^/]+)/predict)",
               [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
                 handle_predict(req, res, reader);
               });

    // Errors without a body of their own (httplib's 404 for unknown paths, 413 for a declared
    // Content-Length over the limit, 400 for malformed requests) get a JSON body too.
    http_.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string message = res.status == 404   ? fmt::format("no such endpoint: {} {}", req.method, req.path)
                            : res.status == 413 ? fmt::format("request body larger than --max-body ({} bytes)", o_.max_body)
                            : res.status == 400 ? "malformed HTTP request"
                                                : fmt::format("HTTP {}", res.status);
      send_error(res, res.status, message);
      return httplib::Server::HandlerResponse::Handled;
    }));
    http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = std::string("internal error: ") + e.what();
      } catch (...) {
      }
      send_error(res, 500, what);
    });
    http_.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      metrics_.inc("modex_http_requests_total",
                   {{"endpoint", endpoint_of(req.method, req.path)}, {"code", std::to_string(res.status)}});
      if (o_.access_log)
        std::cerr << fmt::format("{} {} {} -> {}\n", req.remote_addr, req.method, req.target, res.status);
    });
  }

  void handle_predict(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    struct InFlight {
      Metrics& m;
      explicit InFlight(Metrics& m) : m(m) { m.inc("modex_http_in_flight_requests", {}, 1); }
      ~InFlight() { m.inc("modex_http_in_flight_requests", {}, -1); }
    } in_flight(metrics_);
    std::string name = req.matches[1];
    std::string variant = name;
    int status = 200;
    std::string body;
    bool too_large = false;
    res.status = 200;
    bool read_ok = reader([&](const char* data, size_t n) {
      if (body.size() + n > o_.max_body) {
        too_large = true;
        return false;
      }
      body.append(data, n);
      return true;
    });
    auto start = Clock::now();
    try {
      // httplib refuses a declared Content-Length over the limit itself (status 413) before
      // calling the receiver; the receiver catches chunked bodies.
      if (too_large || (!read_ok && res.status == 413)) {
        too_large = true;
        throw HttpError(413, fmt::format("request body larger than --max-body ({} bytes)", o_.max_body));
      }
      if (!read_ok) throw HttpError(400, "the request body could not be read (incomplete upload?)");
      send_json(res, 200, predict(req, body, name, variant, start));
    } catch (const HttpError& e) {
      status = e.status();
      send_error(res, status, e.what(), e.retry_after_seconds());
    } catch (const Error& e) {
      status = 400;
      send_error(res, status, e.what());
    } catch (const std::bad_alloc&) {
      status = 503;
      send_error(res, status, "out of memory", 1);
    }
    if (too_large) res.set_header("Connection", "close");
    std::string model_label = registry_.contains(name) || routers_.count(name) ? name : "(unknown)";
    std::string variant_label = registry_.contains(variant) ? variant : "(unknown)";
    metrics_.inc("modex_predict_requests_total",
                 {{"model", model_label}, {"variant", variant_label}, {"code", std::to_string(status)}});
    if (status == 200)
      metrics_.observe("modex_predict_latency_seconds", {{"model", model_label}, {"variant", variant_label}},
                       seconds_since(start));
  }

  ServeOptions o_;
  Metrics metrics_;
  ModelRegistry registry_;
  Dispatcher dispatcher_;
  std::map<std::string, std::unique_ptr<Router>> routers_;
  HttpServer http_;
  std::atomic<bool> ready_{false}, draining_{false};
};

}  // namespace

void ServeOptions::validate() const {
  if (models.empty()) throw Error("give at least one model: modex serve MODEL [MODEL ...]");
  auto in = [](const char* flag, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) throw Error(fmt::format("{} must be between {} and {}, got {}", flag, lo, hi, v));
  };
  in("--port", port, 0, 65535);
  in("--threads", threads, 0, 1024);
  in("--workers", workers, 1, 256);
  in("--http-threads", http_threads, 1, 4096);
  in("--max-body", static_cast<int64_t>(max_body), 1, int64_t{1} << 32);
  in("--max-pixels", max_pixels, 1, int64_t{1} << 34);
  in("--timeout-ms", timeout_ms, 1, 3'600'000);
  in("--max-queue", static_cast<int64_t>(max_queue), 1, 1'000'000);
  in("--max-batch", max_batch, 1, 256);
  in("--watch-ms", watch_ms, 0, 3'600'000);
  in("--top", top, 1, kMaxTop);
  if (!(batch_timeout_ms >= 0 && batch_timeout_ms <= 10'000))
    throw Error(fmt::format("--batch-timeout-ms must be between 0 and 10000, got {}", batch_timeout_ms));
  pre.validate();
}

int run_serve(const ServeOptions& o) {
  o.validate();
  sigset_t signals = block_termination_signals();
  Server server(o);
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    timespec tick{0, 200'000'000};
    while (!done) {
      int sig = sigtimedwait(&signals, nullptr, &tick);
      if (sig == SIGTERM || sig == SIGINT) {
        std::cerr << fmt::format("modex serve: {} received, finishing requests in flight\n",
                                 sig == SIGTERM ? "SIGTERM" : "SIGINT");
        server.stop();
        return;
      }
    }
  });
  int rc;
  try {
    rc = server.run();
  } catch (...) {
    done = true;
    waiter.join();
    throw;
  }
  done = true;
  waiter.join();
  return rc;
}

}  // namespace modex::app::serve
