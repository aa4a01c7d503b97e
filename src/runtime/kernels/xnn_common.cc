#include "runtime/kernels/xnn_common.h"

#include <pthreadpool.h>

#include <mutex>
#include <string>

#include "runtime/kernels/native_math.h"

namespace modex::runtime::xnn {

bool available() {
  static const bool ok = xnn_initialize(nullptr) == xnn_status_success;
  return ok;
}

void check(xnn_status status, const char* what) {
  if (status != xnn_status_success)
    throw Error(std::string("XNNPACK ") + what + " failed (status " + std::to_string(static_cast<int>(status)) + ")",
                ErrorKind::kInternal);
}

void run(xnn_operator_t op, const RunContext& ctx) {
  if (ctx.pool && ctx.pool_mutex) {
    std::lock_guard<std::mutex> lock(*ctx.pool_mutex);
    check(xnn_run_operator(op, ctx.pool), "run");
  } else {
    check(xnn_run_operator(op, ctx.pool), "run");
  }
}

Range clamp_range(ir::Activation a) {
  switch (a) {
    case ir::Activation::kRelu: return {0.0f, kInf};
    case ir::Activation::kRelu6: return {0.0f, 6.0f};
    case ir::Activation::kNone:
    case ir::Activation::kHardSwish:
    case ir::Activation::kSigmoid:
    case ir::Activation::kSilu: return {};
  }
  return {};
}

bool PostActivation::init(ir::Activation a) {
  activation_ = a;
  xnn_operator_t op = nullptr;
  switch (a) {
    case ir::Activation::kNone:
    case ir::Activation::kRelu:
    case ir::Activation::kRelu6: return false;
    case ir::Activation::kHardSwish:
      if (xnn_create_hardswish_nc_f32(1, 1, 1, 0, &op) != xnn_status_success) return false;
      first_.reset(op);
      return true;
    case ir::Activation::kSigmoid:
    case ir::Activation::kSilu:
      if (a == ir::Activation::kSilu && native::cpu_has_avx2_fma()) {
        native_silu_ = true;
        return true;
      }
      if (xnn_create_sigmoid_nc_f32(1, 1, 1, 0, &op) != xnn_status_success) return false;
      first_.reset(op);
      if (a == ir::Activation::kSilu) {
        if (xnn_create_multiply_nd_f32(-kInf, kInf, 0, &op) != xnn_status_success) return false;
        multiply_.reset(op);
      }
      return true;
  }
  return false;
}

void PostActivation::setup(float* data, size_t count, const RunContext& ctx) {
  switch (activation_) {
    case ir::Activation::kNone:
    case ir::Activation::kRelu:
    case ir::Activation::kRelu6: return;
    case ir::Activation::kHardSwish:
      check(xnn_setup_hardswish_nc_f32(first_.get(), count, data, data, ctx.pool), "setup hardswish");
      return;
    case ir::Activation::kSigmoid:
      check(xnn_setup_sigmoid_nc_f32(first_.get(), count, data, data, ctx.pool), "setup sigmoid");
      return;
    case ir::Activation::kSilu: {
      if (native_silu_) {
        data_ = data;
        count_ = count;
        return;
      }
      scratch_.resize(count + XNN_EXTRA_BYTES / sizeof(float));
      check(xnn_setup_sigmoid_nc_f32(first_.get(), count, data, scratch_.data(), ctx.pool), "setup sigmoid");
      size_t shape[1] = {count};
      check(xnn_setup_multiply_nd_f32(multiply_.get(), 1, shape, 1, shape, data, scratch_.data(), data, ctx.pool),
            "setup multiply");
      return;
    }
  }
}

void PostActivation::run(const RunContext& ctx) {
  if (native_silu_) {
    constexpr size_t kTile = 16384;  // floats per parallel item
    auto task = [](void* self, size_t begin, size_t n) {
      auto* p = static_cast<PostActivation*>(self);
      native::silu_inplace(p->data_ + begin, n);
    };
    if (ctx.pool && count_ > kTile) {
      std::lock_guard<std::mutex> lock(*ctx.pool_mutex);
      pthreadpool_parallelize_1d_tile_1d(ctx.pool, task, this, count_, kTile, 0);
    } else {
      task(this, 0, count_);
    }
    return;
  }
  if (first_) xnn::run(first_.get(), ctx);
  if (multiply_) xnn::run(multiply_.get(), ctx);
}

std::optional<Dims> static_dims(const ir::Graph& g, ir::ValueId v) { return ir::to_dims(g.value(v).shape); }

int64_t static_dim(const ir::Graph& g, ir::ValueId v, int64_t axis) {
  const ir::Shape& s = g.value(v).shape;
  size_t a = static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(s.size()) : axis);
  return a < s.size() && s[a].is_static() ? s[a].value : -1;
}

}  // namespace modex::runtime::xnn
