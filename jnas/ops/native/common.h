// Shared by the XLA:CPU kernels of jnas.ops.native (depthwise.cc, pooling.cc,
// batch_norm.cc), which are compiled together into one library.
//
// Work is split into independent units (output slices) handed out through an
// atomic counter; the calling thread works too and takes any unit no pool
// thread has started, so a busy pool cannot deadlock the call.
//
// The helpers sit in an unnamed namespace, as when all kernels were one file:
// each kernel file gets its own internal copy, and the library exports only the
// FFI handler symbols.

#ifndef JNAS_OPS_NATIVE_COMMON_H_
#define JNAS_OPS_NATIVE_COMMON_H_

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <typename Pool, typename F>
void ParallelFor(Pool& pool, int64_t n, const F& f) {
  if (n <= 0) return;
  int64_t threads = std::min<int64_t>(pool.num_threads(), n);
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  // A helper that starts after every unit is taken touches only `state`.
  auto work = [state, n, &f]() {
    int64_t i;
    while ((i = state->next.fetch_add(1)) < n) {
      f(i);
      state->done.fetch_add(1);
    }
  };
  for (int64_t t = 1; t < threads; ++t) pool.Schedule(decltype(work)(work));
  work();
  while (state->done.load() < n) std::this_thread::yield();
}

int64_t OutSize(int64_t n, int64_t stride) { return (n - 1) / stride + 1; }

}  // namespace

// Dispatch on the channel count so the common ones get fixed-length inner loops.
#define JNAS_DISPATCH(FN, C, ...)            \
  switch (C) {                               \
    case 8: FN<8>(__VA_ARGS__); break;       \
    case 16: FN<16>(__VA_ARGS__); break;     \
    case 32: FN<32>(__VA_ARGS__); break;     \
    case 64: FN<64>(__VA_ARGS__); break;     \
    default: FN<0>(__VA_ARGS__); break;      \
  }

// Every handler runs on XLA's intra-op thread pool and takes float32 buffers.
#define JNAS_BIND ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
using F32Arg = ffi::Buffer<ffi::F32>;

#endif  // JNAS_OPS_NATIVE_COMMON_H_
