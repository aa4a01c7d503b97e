// The inference queue of `modex serve`: HTTP threads decode and preprocess an image, submit it
// here and wait; worker threads take requests from one bounded queue and run them, batching
// requests for the same model version and input shape (up to max_batch, waiting at most
// batch_timeout for more) into one engine call when the model's batch dim is dynamic.
// A full queue refuses new requests (503 + Retry-After); a request whose deadline passes while
// queued is dropped (504).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "app/serve/model_registry.h"
#include "core/tensor.h"

namespace modex::app::serve {

using Clock = std::chrono::steady_clock;

struct InferenceResult {
  std::vector<float> output;  // the first output of the model for this request (logits)
  int batch_size = 0;         // how many requests shared the engine call
  double inference_ms = 0;    // the engine call
  double queue_ms = 0;        // waiting before it
};

struct DispatcherOptions {
  int workers = 1;             // engine calls at a time
  int max_batch = 1;           // requests per engine call
  std::chrono::microseconds batch_timeout{2000};  // how long the first request waits for company
  size_t max_queue = 256;      // queued (not yet running) requests before 503
};

class Dispatcher {
 public:
  struct Job;

  explicit Dispatcher(DispatcherOptions options);
  ~Dispatcher();  // shutdown()

  // Queues one preprocessed image ([1, ...] for `model`). Throws HttpError 503 (Retry-After)
  // when the queue is full or the dispatcher is shutting down.
  std::shared_ptr<Job> submit(std::shared_ptr<const LoadedModel> model, Tensor input, Clock::time_point deadline);
  // Waits for the result until the job's deadline. Throws HttpError 504 when it passes (the job
  // is then dropped if it has not started), 500 when the engine failed.
  InferenceResult wait(const std::shared_ptr<Job>& job);

  // Runs the jobs already queued, then stops the workers. Idempotent.
  void shutdown();

  size_t queued() const;
  // Called after each engine call with the model name and the batch size (for metrics).
  std::function<void(const std::string&, int)> on_batch;

 private:
  void work();
  std::vector<std::shared_ptr<Job>> take_batch(std::unique_lock<std::mutex>& lock);
  void run_batch(const std::vector<std::shared_ptr<Job>>& batch);

  DispatcherOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace modex::app::serve
