// `modex serve`: the HTTP layer. Thin on purpose: request parsing (request.h), routing weights
// (router.h), metrics (metrics.h), models and hot reload (model_registry.h) and the batching
// inference queue (dispatcher.h) live in their own files; this one wires them to cpp-httplib.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "app/classify.h"

namespace modex::app::serve {

struct ServeOptions {
  std::vector<std::string> models;  // NAME=PATH or PATH (named by the file stem)
  std::vector<std::string> routes;  // NAME=modelA:90,modelB:10
  std::string host = "127.0.0.1";
  int port = 8080;               // 0: any free port (printed)
  int threads = 0;               // engine threads per inference (0: all cores)
  int workers = 1;               // concurrent engine calls
  int http_threads = 128;        // connections served at once (keep-alive holds one each)
  size_t max_body = 10u << 20;   // bytes
  int64_t max_pixels = 40'000'000;
  int timeout_ms = 30'000;       // per request, from the end of the upload to the answer
  size_t max_queue = 256;        // requests waiting for inference before 503
  int max_batch = 1;             // requests per engine call
  double batch_timeout_ms = 2;   // how long a request waits for others to batch with
  int watch_ms = 1000;           // model file poll interval (0: no watching)
  int top = 5;                   // default ?top=
  PreprocessOverrides pre;
  bool access_log = false;
  void validate() const;
};

// Serves until SIGTERM or SIGINT, then stops accepting, finishes the requests in flight and
// returns 0. Throws modex::Error when a model cannot be loaded or the port cannot be bound.
int run_serve(const ServeOptions& options);

}  // namespace modex::app::serve
