#include "app/serve/dispatcher.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "app/serve/request.h"
#include "core/error.h"

namespace modex::app::serve {

struct Dispatcher::Job {
  std::shared_ptr<const LoadedModel> model;
  Tensor input;
  Clock::time_point deadline;
  Clock::time_point queued_at;
  std::atomic<bool> abandoned{false};  // the waiter gave up: skip if not started
  std::promise<InferenceResult> promise;
  std::future<InferenceResult> future = promise.get_future();
};

Dispatcher::Dispatcher(DispatcherOptions options) : options_(options) {
  check(options_.workers >= 1 && options_.max_batch >= 1 && options_.max_queue >= 1,
        "the dispatcher needs at least one worker, a batch of at least 1 and a queue of at least 1");
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { work(); });
}

Dispatcher::~Dispatcher() { shutdown(); }

std::shared_ptr<Dispatcher::Job> Dispatcher::submit(std::shared_ptr<const LoadedModel> model, Tensor input,
                                                    Clock::time_point deadline) {
  auto job = std::make_shared<Job>();
  job->model = std::move(model);
  job->input = std::move(input);
  job->deadline = deadline;
  job->queued_at = Clock::now();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw HttpError(503, "the server is shutting down", 1);
    if (queue_.size() >= options_.max_queue)
      throw HttpError(503, fmt::format("the server is busy: {} requests are queued (--max-queue)", queue_.size()), 1);
    queue_.push_back(job);
  }
  cv_.notify_one();
  return job;
}

InferenceResult Dispatcher::wait(const std::shared_ptr<Job>& job) {
  if (job->future.wait_until(job->deadline) != std::future_status::ready) {
    job->abandoned = true;
    throw HttpError(504, "the request timed out before inference finished (--timeout-ms)");
  }
  try {
    return job->future.get();
  } catch (const HttpError&) {
    throw;
  } catch (const std::exception& e) {
    throw HttpError(500, fmt::format("inference failed: {}", e.what()));
  }
}

size_t Dispatcher::queued() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

void Dispatcher::shutdown() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

std::vector<std::shared_ptr<Dispatcher::Job>> Dispatcher::take_batch(std::unique_lock<std::mutex>& lock) {
  std::vector<std::shared_ptr<Job>> batch;
  batch.push_back(queue_.front());
  queue_.pop_front();
  const std::shared_ptr<Job> first = batch.front();  // a copy: push_back below may reallocate
  if (options_.max_batch <= 1 || !first->model->dynamic_batch) return batch;
  auto compatible = [&](const std::shared_ptr<Job>& j) {
    return j->model == first->model && j->input.shape() == first->input.shape();
  };
  auto collect = [&] {
    for (auto it = queue_.begin(); it != queue_.end() && static_cast<int>(batch.size()) < options_.max_batch;) {
      if (compatible(*it)) {
        batch.push_back(*it);
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
  };
  collect();
  // Wait a little for more requests, unless the batch is full or another worker is idle anyway.
  auto until = Clock::now() + options_.batch_timeout;
  while (static_cast<int>(batch.size()) < options_.max_batch && !stopping_) {
    if (cv_.wait_until(lock, until) == std::cv_status::timeout) {
      collect();
      break;
    }
    collect();
  }
  return batch;
}

void Dispatcher::work() {
  std::unique_lock lock(mutex_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping and drained
    std::vector<std::shared_ptr<Job>> batch = take_batch(lock);
    lock.unlock();
    run_batch(batch);
    lock.lock();
  }
}

void Dispatcher::run_batch(const std::vector<std::shared_ptr<Job>>& all) {
  // Requests whose client gave up or whose deadline passed are not run.
  auto start = Clock::now();
  std::vector<std::shared_ptr<Job>> batch;
  for (const auto& j : all) {
    if (j->abandoned || start > j->deadline) {
      j->promise.set_exception(std::make_exception_ptr(HttpError(504, "the request timed out in the queue (--timeout-ms)")));
    } else {
      batch.push_back(j);
    }
  }
  if (batch.empty()) return;
  const auto& first = batch.front();
  try {
    Tensor input;
    if (batch.size() == 1) {
      input = first->input;
    } else {
      Dims shape = first->input.shape();
      shape[0] = static_cast<int64_t>(batch.size());
      input = Tensor::empty(first->input.dtype(), shape);
      size_t per = first->input.nbytes();
      for (size_t i = 0; i < batch.size(); ++i) std::memcpy(input.raw_mutable() + i * per, batch[i]->input.raw(), per);
    }
    std::vector<Tensor> out = first->model->model->run({input});
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    check(!out.empty() && out[0].rank() >= 1 && out[0].dim(0) == static_cast<int64_t>(batch.size()),
          fmt::format("model '{}' returned an output whose first dim is not the batch of {}", first->model->name,
                      batch.size()));
    int64_t per = out[0].numel() / static_cast<int64_t>(batch.size());
    const float* data = out[0].data<float>();
    for (size_t i = 0; i < batch.size(); ++i) {
      InferenceResult r;
      r.output.assign(data + static_cast<int64_t>(i) * per, data + static_cast<int64_t>(i + 1) * per);
      r.batch_size = static_cast<int>(batch.size());
      r.inference_ms = ms;
      r.queue_ms = std::chrono::duration<double, std::milli>(start - batch[i]->queued_at).count();
      batch[i]->promise.set_value(std::move(r));
    }
  } catch (...) {
    for (const auto& j : batch) {
      try {
        j->promise.set_exception(std::current_exception());
      } catch (const std::future_error&) {  // this one already has its result
      }
    }
  }
  if (on_batch) on_batch(first->model->name, static_cast<int>(batch.size()));
}

}  // namespace modex::app::serve
