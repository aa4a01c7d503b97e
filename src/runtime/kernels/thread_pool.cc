// modex's implementation of the pthreadpool C API (pthreadpool.h), used by the engine, the
// native kernels and XNNPACK alike.
//
// Why not libpthreadpool: its parallelize calls return only after every worker thread has woken
// up, taken its share (or found the range already stolen) and checked in. On a machine where
// another process holds a core, a descheduled worker therefore stalls each call by up to a
// scheduler time slice, and a network runs 60-150 parallel calls per inference: mobilenet_v2 took
// 420-640 ms at 2 threads against 19 ms at 1 (measured here with the load average at 4).
// This pool hands out work in small chunks, the calling thread takes chunks too, and a call is
// finished when every chunk is done: a worker that has not woken up yet claims nothing and is
// never waited for, its share is taken over. (ONNX Runtime's pool works the same way.) Each
// thread starts on its own contiguous range of chunks, from an atomic counter per range.
//
// How it replaces libpthreadpool: these functions are defined in modex's own static library, so
// the linker binds the engine's calls to them, and exports them from the executable because
// libXNNPACK.so references them; the dynamic loader then resolves XNNPACK's calls to the
// executable's definitions first (ELF symbol interposition). The pthreadpool_t handed to XNNPACK
// is always one of ours. Only the entry points Debian's libXNNPACK (2022-02) calls, plus
// create / destroy / thread count, are provided.
#include <pthreadpool.h>
#include <xmmintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

struct pthreadpool {
 public:

  using Invoke = void (*)(void* closure, size_t begin, size_t end);

  explicit pthreadpool(size_t threads) : threads_(threads), slots_(new Slot[threads]) {
    for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  }

  ~pthreadpool() {
    stop_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    for (auto& t : workers_) t.join();
  }

  size_t threads() const { return threads_; }

  // Calls invoke(closure, b, e) over [0, total) in chunks, on this thread and the workers.
  void parallelize(size_t total, uint32_t flags, Invoke invoke, void* closure) {
    std::lock_guard<std::mutex> lock(call_mutex_);
    // ~8 chunks per thread: small enough that a worker descheduled mid-chunk holds up little,
    // large enough that claiming costs nothing next to the work.
    size_t chunk = std::max<size_t>(1, total / (threads_ * 8));
    size_t chunks = (total + chunk - 1) / chunk;
    invoke_ = invoke;
    closure_ = closure;
    total_ = total;
    chunk_ = chunk;
    flags_ = flags;
    done_.store(0, std::memory_order_relaxed);
    uint32_t g = ++last_generation_;
    // Thread t's own chunks are the t-th of threads_ contiguous ranges: consecutive calls over the
    // same rows give each thread the same part of the tensor, which its core's cache still holds
    // from the call before (on a 2 MB-L2 part, fetching the other core's half instead made small
    // depthwise layers slower at 2 threads than at 1).
    // The counter first, then the end: a worker still scanning the previous call's slots may read
    // the new end, but by then its exchange against the old counter value fails (in the other
    // order it could claim a chunk of this call under the old generation).
    for (size_t t = 0; t < threads_; ++t) {
      slots_[t].next.store(static_cast<uint64_t>(g) << 32 | (t * chunks / threads_), std::memory_order_release);
      slots_[t].end.store(static_cast<uint64_t>((t + 1) * chunks / threads_), std::memory_order_release);
    }
    generation_.store(g, std::memory_order_release);
    generation_.notify_all();
    work(g, 0);
    // Every chunk is claimed by now; wait only for chunks still running on a worker.
    for (unsigned spins = 0; done_.load(std::memory_order_acquire) < chunks; ++spins) {
      if (spins < 4096)
        _mm_pause();
      else
        std::this_thread::yield();
    }
  }

 private:
  // Runs chunks of generation g until none is left (or the call has moved on): thread `self`'s
  // own range first, then what is left of the others' (a late or descheduled thread's share is
  // taken over, so nobody waits for it).
  void work(uint32_t g, size_t self) {
    for (size_t k = 0; k < threads_; ++k) {
      Slot& slot = slots_[(self + k) % threads_];
      for (;;) {
        uint64_t s = slot.next.load(std::memory_order_acquire);
        if (static_cast<uint32_t>(s >> 32) != g) return;
        uint64_t c = s & 0xffffffffu;
        // `end` may already be a later call's if this one finished meanwhile; the exchange below
        // then fails, as the counter was moved on before the end was.
        if (c >= slot.end.load(std::memory_order_acquire)) break;
        if (!slot.next.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) continue;
        // The call cannot finish before this chunk is counted done, so its fields are stable.
        size_t begin = c * chunk_, end = std::min(total_, begin + chunk_);
        if (flags_ & PTHREADPOOL_FLAG_DISABLE_DENORMALS) {
          unsigned saved = _mm_getcsr();
          _mm_setcsr(saved | 0x8040);  // FTZ | DAZ
          invoke_(closure_, begin, end);
          _mm_setcsr(saved);
        } else {
          invoke_(closure_, begin, end);
        }
        done_.fetch_add(1, std::memory_order_release);
      }
    }
  }

  void worker_loop(size_t self) {
    uint32_t seen = 0;
    for (;;) {
      uint32_t g = generation_.load(std::memory_order_acquire);
      // Spin briefly: the next call of the same inference usually follows within microseconds.
      // (Spinning up to 2 ms, as ONNX Runtime's workers do, measured no better here, and burns a
      // core after every inference on a shared machine.)
      for (unsigned spins = 0; g == seen && spins < 2048; ++spins) {
        _mm_pause();
        g = generation_.load(std::memory_order_acquire);
      }
      while (g == seen) {
        generation_.wait(seen, std::memory_order_acquire);
        g = generation_.load(std::memory_order_acquire);
      }
      if (stop_.load(std::memory_order_acquire)) return;
      seen = g;
      work(g, self);
    }
  }

  const size_t threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mutex_;
  // One thread's range of chunks: next = generation << 32 | next chunk, end = one past its last.
  struct alignas(64) Slot {
    std::atomic<uint64_t> next{0};
    std::atomic<uint64_t> end{0};
  };
  std::unique_ptr<Slot[]> slots_;
  std::atomic<uint32_t> generation_{0};  // what workers wait on
  std::atomic<uint64_t> done_{0};
  std::atomic<bool> stop_{false};
  uint32_t last_generation_ = 0;  // under call_mutex_
  Invoke invoke_ = nullptr;
  void* closure_ = nullptr;
  size_t total_ = 0, chunk_ = 1;
  uint32_t flags_ = 0;
};

namespace {

size_t divide_round_up(size_t n, size_t d) { return (n + d - 1) / d; }

// Runs f(i) for i in [0, total): inline without a pool (or with one item), else on the pool.
template <class F>
void parallel_for(pthreadpool_t pool, size_t total, uint32_t flags, F&& f) {
  if (total == 0) return;
  if (!pool || pool->threads() <= 1 || total == 1) {
    unsigned saved = _mm_getcsr();
    if (flags & PTHREADPOOL_FLAG_DISABLE_DENORMALS) _mm_setcsr(saved | 0x8040);
    for (size_t i = 0; i < total; ++i) f(i);
    _mm_setcsr(saved);
    return;
  }
  using Fn = std::remove_reference_t<F>;
  pool->parallelize(
      total, flags,
      [](void* closure, size_t begin, size_t end) {
        Fn& fn = *static_cast<Fn*>(closure);
        for (size_t i = begin; i < end; ++i) fn(i);
      },
      &f);
}

}  // namespace

extern "C" {

pthreadpool_t pthreadpool_create(size_t threads_count) {
  if (threads_count == 0) threads_count = std::max(1u, std::thread::hardware_concurrency());
  try {
    return new pthreadpool(threads_count);
  } catch (...) {
    return nullptr;
  }
}

size_t pthreadpool_get_threads_count(pthreadpool_t pool) { return pool ? pool->threads() : 1; }

void pthreadpool_destroy(pthreadpool_t pool) { delete pool; }

void pthreadpool_parallelize_1d(pthreadpool_t pool, pthreadpool_task_1d_t fn, void* ctx,
                                size_t range, uint32_t flags) {
  parallel_for(pool, range, flags, [&](size_t i) { fn(ctx, i); });
}

void pthreadpool_parallelize_1d_tile_1d(pthreadpool_t pool, pthreadpool_task_1d_tile_1d_t fn,
                                        void* ctx, size_t range, size_t tile, uint32_t flags) {
  parallel_for(pool, divide_round_up(range, tile), flags, [&](size_t t) {
    size_t i = t * tile;
    fn(ctx, i, std::min(range - i, tile));
  });
}

void pthreadpool_parallelize_2d(pthreadpool_t pool, pthreadpool_task_2d_t fn, void* ctx,
                                size_t range_i, size_t range_j, uint32_t flags) {
  parallel_for(pool, range_i * range_j, flags,
               [&](size_t t) { fn(ctx, t / range_j, t % range_j); });
}

void pthreadpool_parallelize_2d_tile_1d(pthreadpool_t pool, pthreadpool_task_2d_tile_1d_t fn,
                                        void* ctx, size_t range_i, size_t range_j, size_t tile_j,
                                        uint32_t flags) {
  size_t tj = divide_round_up(range_j, tile_j);
  parallel_for(pool, range_i * tj, flags, [&](size_t t) {
    size_t i = t / tj, j = t % tj * tile_j;
    fn(ctx, i, j, std::min(range_j - j, tile_j));
  });
}

void pthreadpool_parallelize_2d_tile_2d(pthreadpool_t pool, pthreadpool_task_2d_tile_2d_t fn,
                                        void* ctx, size_t range_i, size_t range_j, size_t tile_i,
                                        size_t tile_j, uint32_t flags) {
  size_t ti = divide_round_up(range_i, tile_i), tj = divide_round_up(range_j, tile_j);
  parallel_for(pool, ti * tj, flags, [&](size_t t) {
    size_t i = t / tj * tile_i, j = t % tj * tile_j;
    fn(ctx, i, j, std::min(range_i - i, tile_i), std::min(range_j - j, tile_j));
  });
}

void pthreadpool_parallelize_3d(pthreadpool_t pool, pthreadpool_task_3d_t fn, void* ctx,
                                size_t range_i, size_t range_j, size_t range_k, uint32_t flags) {
  parallel_for(pool, range_i * range_j * range_k, flags, [&](size_t t) {
    size_t k = t % range_k, ij = t / range_k;
    fn(ctx, ij / range_j, ij % range_j, k);
  });
}

void pthreadpool_parallelize_3d_tile_2d(pthreadpool_t pool, pthreadpool_task_3d_tile_2d_t fn,
                                        void* ctx, size_t range_i, size_t range_j, size_t range_k,
                                        size_t tile_j, size_t tile_k, uint32_t flags) {
  size_t tj = divide_round_up(range_j, tile_j), tk = divide_round_up(range_k, tile_k);
  parallel_for(pool, range_i * tj * tk, flags, [&](size_t t) {
    size_t k = t % tk * tile_k, rest = t / tk, j = rest % tj * tile_j, i = rest / tj;
    fn(ctx, i, j, k, std::min(range_j - j, tile_j), std::min(range_k - k, tile_k));
  });
}

void pthreadpool_parallelize_4d(pthreadpool_t pool, pthreadpool_task_4d_t fn, void* ctx,
                                size_t range_i, size_t range_j, size_t range_k, size_t range_l,
                                uint32_t flags) {
  parallel_for(pool, range_i * range_j * range_k * range_l, flags, [&](size_t t) {
    size_t l = t % range_l, r = t / range_l, k = r % range_k;
    r /= range_k;
    fn(ctx, r / range_j, r % range_j, k, l);
  });
}

void pthreadpool_parallelize_4d_tile_2d(pthreadpool_t pool, pthreadpool_task_4d_tile_2d_t fn,
                                        void* ctx, size_t range_i, size_t range_j, size_t range_k,
                                        size_t range_l, size_t tile_k, size_t tile_l,
                                        uint32_t flags) {
  size_t tk = divide_round_up(range_k, tile_k), tl = divide_round_up(range_l, tile_l);
  parallel_for(pool, range_i * range_j * tk * tl, flags, [&](size_t t) {
    size_t l = t % tl * tile_l, r = t / tl, k = r % tk * tile_k;
    r /= tk;
    fn(ctx, r / range_j, r % range_j, k, l, std::min(range_k - k, tile_k),
       std::min(range_l - l, tile_l));
  });
}

void pthreadpool_parallelize_5d(pthreadpool_t pool, pthreadpool_task_5d_t fn, void* ctx,
                                size_t range_i, size_t range_j, size_t range_k, size_t range_l,
                                size_t range_m, uint32_t flags) {
  parallel_for(pool, range_i * range_j * range_k * range_l * range_m, flags, [&](size_t t) {
    size_t m = t % range_m, r = t / range_m, l = r % range_l;
    r /= range_l;
    size_t k = r % range_k;
    r /= range_k;
    fn(ctx, r / range_j, r % range_j, k, l, m);
  });
}

void pthreadpool_parallelize_5d_tile_2d(pthreadpool_t pool, pthreadpool_task_5d_tile_2d_t fn,
                                        void* ctx, size_t range_i, size_t range_j, size_t range_k,
                                        size_t range_l, size_t range_m, size_t tile_l,
                                        size_t tile_m, uint32_t flags) {
  size_t tl = divide_round_up(range_l, tile_l), tm = divide_round_up(range_m, tile_m);
  parallel_for(pool, range_i * range_j * range_k * tl * tm, flags, [&](size_t t) {
    size_t m = t % tm * tile_m, r = t / tm, l = r % tl * tile_l;
    r /= tl;
    size_t k = r % range_k;
    r /= range_k;
    fn(ctx, r / range_j, r % range_j, k, l, m, std::min(range_l - l, tile_l),
       std::min(range_m - m, tile_m));
  });
}

void pthreadpool_parallelize_6d_tile_2d(pthreadpool_t pool, pthreadpool_task_6d_tile_2d_t fn,
                                        void* ctx, size_t range_i, size_t range_j, size_t range_k,
                                        size_t range_l, size_t range_m, size_t range_n,
                                        size_t tile_m, size_t tile_n, uint32_t flags) {
  size_t tm = divide_round_up(range_m, tile_m), tn = divide_round_up(range_n, tile_n);
  parallel_for(pool, range_i * range_j * range_k * range_l * tm * tn, flags, [&](size_t t) {
    size_t n = t % tn * tile_n, r = t / tn, m = r % tm * tile_m;
    r /= tm;
    size_t l = r % range_l;
    r /= range_l;
    size_t k = r % range_k;
    r /= range_k;
    fn(ctx, r / range_j, r % range_j, k, l, m, n, std::min(range_m - m, tile_m),
       std::min(range_n - n, tile_n));
  });
}

}  // extern "C"
