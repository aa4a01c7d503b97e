#include "app/serve_command.h"

#include <CLI/CLI.hpp>

#include <memory>

#include "app/serve/server.h"

namespace modex::app {

void add_serve_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<serve::ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "Serve models over HTTP: predictions, metrics, A/B routes, hot reload");
  cmd->add_option("models", o->models, "Models to serve: PATH (named by its file stem) or NAME=PATH")->required();
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "Port (0: any free port, printed)")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Engine threads per inference (0: all cores)")->capture_default_str();
  cmd->add_option("--workers", o->workers, "Inferences running at once")->capture_default_str();
  cmd->add_option("--http-threads", o->http_threads, "Connections served at once")->capture_default_str();
  cmd->add_option("--route", o->routes, "A/B split: NAME=modelA:90,modelB:10 (repeatable)")
      ->allow_extra_args(false);  // one value per --route: models may follow it
  cmd->add_option("--max-body", o->max_body, "Largest request body in bytes (413 above)")->capture_default_str();
  cmd->add_option("--max-pixels", o->max_pixels, "Largest image in pixels (413 above; no decompression bombs)")
      ->capture_default_str();
  cmd->add_option("--timeout-ms", o->timeout_ms, "Per-request timeout (504 after)")->capture_default_str();
  cmd->add_option("--max-queue", o->max_queue, "Requests waiting for inference before 503 + Retry-After")
      ->capture_default_str();
  cmd->add_option("--max-batch", o->max_batch, "Requests batched into one inference (models with a dynamic batch)")
      ->capture_default_str();
  cmd->add_option("--batch-timeout-ms", o->batch_timeout_ms, "How long a request waits for others to batch with")
      ->capture_default_str();
  cmd->add_option("--watch-ms", o->watch_ms, "Poll model files for changes every N ms and reload (0: off)")
      ->capture_default_str();
  cmd->add_option("--top", o->top, "Classes listed when the request has no ?top=")->capture_default_str();
  cmd->add_option("--input-size", o->pre.input_size, "Override the models' input size");
  cmd->add_option("--resize", o->pre.resize, "resize | resize_center_crop")
      ->check(CLI::IsMember({"resize", "resize_center_crop"}));
  cmd->add_option("--mean", o->pre.mean, "Normalisation mean, 3 comma-separated values")
      ->delimiter(',')
      ->allow_extra_args(false);
  cmd->add_option("--std", o->pre.std, "Normalisation std, 3 comma-separated values")
      ->delimiter(',')
      ->allow_extra_args(false);
  cmd->add_option("--layout", o->pre.layout, "nchw | nhwc (default: from the model)")
      ->check(CLI::IsMember({"nchw", "nhwc"}));
  cmd->add_flag("--access-log", o->access_log, "Log every request to stderr");
  cmd->callback([o, &exit_code] { exit_code = serve::run_serve(*o); });
}

}  // namespace modex::app
