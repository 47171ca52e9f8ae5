// Depthwise convolutions and pooling for XLA:CPU through the XLA FFI (jnas.ops.native).
//
// XLA:CPU has no fast grouped convolution, and the tap-sum form that jnas
// writes in JAX compiles into large fusions (slow to compile, and for small
// channel counts slow to run). These three kernels compute the same
// 'same'-padded depthwise convolution directly, for K convolutions at once
// that either share one input (the conv candidates of a mixed op) or each
// read their own block of a stacked input:
//
//   x: [*lead, Ein, B, *S, C]   Ein = E/R (shared) or K*E
//   w: [*lead, E, sum_k T_k, C] tap weights of the K kernels, concatenated
//   y: [*lead, K*E, B, *So, C]  block k*E+e = conv_k(f(x[e/R or k*E+e]), w_k[e])
//
// R ("repeat", shared inputs only) lets R consecutive edges read one input
// block: a DARTS cell feeds each of its inputs to several edges, and reading
// the block once avoids both the broadcast copy and, in the backward pass,
// the reduction of the copies' gradients.
//
// f is ReLU or the identity. `lead` holds vmap's batch axes: every leading
// index is an independent problem. S has one axis (sequences) or two
// (images); C is the minor, contiguous axis, so every inner loop runs over
// channels.
//
// Work is split into independent units (output slices) handed out through an
// atomic counter; the calling thread works too and takes any unit no pool
// thread has started, so a busy pool cannot deadlock the call.

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

struct Geometry {
  int64_t nd, lead_n, ein, e, k, b, h, w, c, ho, wo, stride, tsum, repeat;
  std::vector<int64_t> kernels, dilations, tap_offset;
  bool shared, relu;

  int64_t kh(int64_t q) const { return nd == 2 ? kernels[q] : 1; }
  int64_t kw(int64_t q) const { return kernels[q]; }
  int64_t pad(int64_t q) const { return dilations[q] * (kernels[q] - 1) / 2; }
  // Output blocks (kernel, edge) computed from input block eb, R*K of them when shared.
  template <typename F>
  void ForBlockOutputs(int64_t eb, const F& f) const {
    if (!shared) {
      f(eb / e, eb % e, int64_t{0});
      return;
    }
    for (int64_t r = 0; r < repeat; ++r)
      for (int64_t q = 0; q < k; ++q) f(q, eb * repeat + r, r);
  }
  // Edges whose weight gradients input block eb contributes to (R when shared).
  int64_t edges_per_block() const { return shared ? repeat : 1; }
};

int64_t OutSize(int64_t n, int64_t stride) { return (n - 1) / stride + 1; }

ffi::Error MakeGeometry(ffi::AnyBuffer::Dimensions xd, ffi::AnyBuffer::Dimensions wd, int64_t nd,
                        int64_t stride, bool shared, bool relu, int64_t repeat,
                        ffi::Span<const int64_t> kernels, ffi::Span<const int64_t> dilations,
                        Geometry* g) {
  const int64_t rank = xd.size();
  const int64_t lead = rank - (nd + 3);
  if (nd < 1 || nd > 2 || lead < 0 || static_cast<int64_t>(wd.size()) != lead + 3)
    return ffi::Error::InvalidArgument("jnas depthwise: bad ranks");
  if (kernels.size() == 0 || kernels.size() != dilations.size() || stride < 1)
    return ffi::Error::InvalidArgument("jnas depthwise: bad kernels/dilations/stride");
  g->nd = nd;
  g->lead_n = 1;
  for (int64_t i = 0; i < lead; ++i) {
    if (xd[i] != wd[i]) return ffi::Error::InvalidArgument("jnas depthwise: leading axes differ");
    g->lead_n *= xd[i];
  }
  g->ein = xd[lead];
  g->b = xd[lead + 1];
  g->h = nd == 2 ? xd[lead + 2] : 1;
  g->w = xd[lead + 1 + nd];
  g->c = xd[rank - 1];
  g->e = wd[lead];
  g->tsum = wd[lead + 1];
  g->k = kernels.size();
  g->stride = stride;
  g->shared = shared;
  g->relu = relu;
  g->repeat = repeat;
  if (repeat < 1 || (!shared && repeat != 1))
    return ffi::Error::InvalidArgument("jnas depthwise: repeat must be >= 1, and 1 unless shared");
  g->kernels.assign(kernels.begin(), kernels.end());
  g->dilations.assign(dilations.begin(), dilations.end());
  g->tap_offset.assign(1, 0);
  for (int64_t q = 0; q < g->k; ++q) {
    if (kernels[q] < 1 || kernels[q] % 2 == 0 || dilations[q] < 1)
      return ffi::Error::InvalidArgument("jnas depthwise: kernels must be odd, dilations >= 1");
    g->tap_offset.push_back(g->tap_offset.back() + g->kh(q) * g->kw(q));
  }
  if (g->tap_offset.back() != g->tsum || wd[lead + 2] != g->c)
    return ffi::Error::InvalidArgument("jnas depthwise: weight shape does not match the kernels");
  if (shared ? g->ein * repeat != g->e : g->ein != g->k * g->e)
    return ffi::Error::InvalidArgument("jnas depthwise: input blocks do not match the weights");
  g->ho = nd == 2 ? OutSize(g->h, stride) : 1;
  g->wo = OutSize(g->w, stride);
  return ffi::Error::Success();
}

// Copies one [h, w, c] slice into a zeroed [h + 2*ph, w + 2*pw, c] scratch buffer at (ph, pw),
// through ReLU if asked: every tap then reads in bounds, with no branch in the inner loops.
void PadSlice(const float* src, int64_t h, int64_t w, int64_t c, int64_t ph, int64_t pw, bool relu,
              std::vector<float>* buf) {
  const int64_t wp = w + 2 * pw;
  buf->assign((h + 2 * ph) * wp * c, 0.0f);
  for (int64_t r = 0; r < h; ++r) {
    const float* s = src + r * w * c;
    float* d = buf->data() + ((r + ph) * wp + pw) * c;
    if (relu) {
      for (int64_t t = 0; t < w * c; ++t) d[t] = std::max(s[t], 0.0f);
    } else {
      std::memcpy(d, s, sizeof(float) * w * c);
    }
  }
}

// Zero-upsamples one [ho, wo, c] output-gradient slice by the stride into a
// [h + 2*ph, w + 2*pw, c] scratch buffer: position (r, q) holds dy[r/s, q/s]
// (offset by the padding) when both divide, so the input gradient becomes a
// stride-1 correlation with the flipped kernel.
void UpsampleSlice(const float* dy, const Geometry& g, int64_t ph, int64_t pw,
                   std::vector<float>* buf) {
  const int64_t c = g.c, wp = g.w + 2 * pw, s = g.stride;
  buf->assign((g.h + 2 * ph) * wp * c, 0.0f);
  for (int64_t r = 0; r < g.ho; ++r) {
    for (int64_t q = 0; q < g.wo; ++q) {
      std::memcpy(buf->data() + ((r * s + ph) * wp + q * s + pw) * c, dy + (r * g.wo + q) * c,
                  sizeof(float) * c);
    }
  }
}

// out[o] (+)= sum over the kernel's taps of src[o*s + tap offset] * w[tap], for one output row;
// src is a padded buffer whose row `row0` is the first the kernel reads for this output row.
template <int64_t CC, bool kAccumulate>
inline void TapRow(float* __restrict out, const float* __restrict src, const float* __restrict w,
                   int64_t wo, int64_t s, int64_t kh, int64_t kw, int64_t d, int64_t row_stride,
                   bool flip, int64_t c_rt) {
  const int64_t c = CC > 0 ? CC : c_rt;
  constexpr int64_t kMax = CC > 0 ? CC : 64;
  for (int64_t o = 0; o < wo; ++o) {
    for (int64_t c0 = 0; c0 < c; c0 += kMax) {
      const int64_t cn = std::min<int64_t>(kMax, c - c0);
      float acc[kMax];
      for (int64_t ch = 0; ch < cn; ++ch) acc[ch] = kAccumulate ? out[o * c + c0 + ch] : 0.0f;
      for (int64_t i = 0; i < kh; ++i) {
        const float* srow = src + i * d * row_stride + o * s * c + c0;
        for (int64_t j = 0; j < kw; ++j) {
          const int64_t t = flip ? (kh - 1 - i) * kw + (kw - 1 - j) : i * kw + j;
          const float* xv = srow + j * d * c;
          const float* wv = w + t * c + c0;
          for (int64_t ch = 0; ch < cn; ++ch) acc[ch] += xv[ch] * wv[ch];
        }
      }
      for (int64_t ch = 0; ch < cn; ++ch) out[o * c + c0 + ch] = acc[ch];
    }
  }
}

// Largest padding over the kernels that read input block `eb`.
int64_t BlockPad(const Geometry& g, int64_t eb) {
  if (!g.shared) return g.pad(eb / g.e);
  int64_t pmax = 0;
  for (int64_t q = 0; q < g.k; ++q) pmax = std::max(pmax, g.pad(q));
  return pmax;
}

template <int64_t CC, typename Pool>
void Forward(const Geometry& g, const float* x, const float* w, float* y, Pool& pool) {
  const int64_t c = g.c, units = g.lead_n * g.ein * g.b;
  ParallelFor(pool, units, [&](int64_t u) {
    const int64_t bi = u % g.b, eb = (u / g.b) % g.ein, n = u / (g.b * g.ein);
    const int64_t pm = BlockPad(g, eb);
    const int64_t ph = g.nd == 2 ? pm : 0, wp = g.w + 2 * pm;
    thread_local std::vector<float> buf;
    PadSlice(x + ((n * g.ein + eb) * g.b + bi) * g.h * g.w * c, g.h, g.w, c, ph, pm, g.relu, &buf);
    g.ForBlockOutputs(eb, [&](int64_t q, int64_t ei, int64_t) {
      const float* wk = w + ((n * g.e + ei) * g.tsum + g.tap_offset[q]) * c;
      float* yout = y + ((n * g.k * g.e + q * g.e + ei) * g.b + bi) * g.ho * g.wo * c;
      const int64_t p = g.pad(q), qh = g.nd == 2 ? pm - p : 0, qw = pm - p;
      for (int64_t ho = 0; ho < g.ho; ++ho) {
        const float* src = buf.data() + ((ho * g.stride + qh) * wp + qw) * c;
        TapRow<CC, false>(yout + ho * g.wo * c, src, wk, g.wo, g.stride, g.kh(q), g.kw(q),
                          g.dilations[q], wp * c, false, c);
      }
    });
  });
}

template <int64_t CC, typename Pool>
void InputGrad(const Geometry& g, const float* dy, const float* w, const float* x, float* dx,
               Pool& pool) {
  const int64_t c = g.c, units = g.lead_n * g.ein * g.b, slice = g.h * g.w * c;
  ParallelFor(pool, units, [&](int64_t u) {
    const int64_t bi = u % g.b, eb = (u / g.b) % g.ein, n = u / (g.b * g.ein);
    float* dxs = dx + ((n * g.ein + eb) * g.b + bi) * slice;
    thread_local std::vector<float> buf;
    bool first = true;
    g.ForBlockOutputs(eb, [&](int64_t q, int64_t ei, int64_t) {
      const int64_t p = g.pad(q), ph = g.nd == 2 ? p : 0, wp = g.w + 2 * p;
      UpsampleSlice(dy + ((n * g.k * g.e + q * g.e + ei) * g.b + bi) * g.ho * g.wo * c, g, ph, p,
                    &buf);
      const float* wk = w + ((n * g.e + ei) * g.tsum + g.tap_offset[q]) * c;
      for (int64_t h = 0; h < g.h; ++h) {
        float* row = dxs + h * g.w * c;
        if (first) {
          TapRow<CC, false>(row, buf.data() + h * wp * c, wk, g.w, 1, g.kh(q), g.kw(q),
                            g.dilations[q], wp * c, true, c);
        } else {
          TapRow<CC, true>(row, buf.data() + h * wp * c, wk, g.w, 1, g.kh(q), g.kw(q),
                           g.dilations[q], wp * c, true, c);
        }
      }
      first = false;
    });
    if (g.relu) {
      const float* xs = x + ((n * g.ein + eb) * g.b + bi) * slice;
      for (int64_t t = 0; t < slice; ++t) dxs[t] = xs[t] > 0.0f ? dxs[t] : 0.0f;
    }
  });
}

template <int64_t CC, typename Pool>
void WeightGrad(const Geometry& g, const float* dy, const float* x, float* dw, Pool& pool) {
  const int64_t c = g.c, inputs = g.lead_n * g.ein;
  // Enough units to keep every thread busy: split the batch when there are few inputs.
  const int64_t threads = std::max<int64_t>(pool.num_threads(), 1);
  const int64_t chunks =
      std::min<int64_t>(g.b, std::max<int64_t>(1, (4 * threads + inputs - 1) / inputs));
  const int64_t part = g.tsum * c, unit_part = g.edges_per_block() * part;
  std::vector<float> partial(inputs * chunks * unit_part, 0.0f);
  ParallelFor(pool, inputs * chunks, [&](int64_t u) {
    const int64_t chunk = u % chunks, eb = (u / chunks) % g.ein, n = u / (chunks * g.ein);
    const int64_t b0 = chunk * g.b / chunks, b1 = (chunk + 1) * g.b / chunks;
    const int64_t pm = BlockPad(g, eb);
    const int64_t ph = g.nd == 2 ? pm : 0, wp = g.w + 2 * pm;
    float* unit_acc = partial.data() + u * unit_part;
    thread_local std::vector<float> buf;
    for (int64_t bi = b0; bi < b1; ++bi) {
      PadSlice(x + ((n * g.ein + eb) * g.b + bi) * g.h * g.w * c, g.h, g.w, c, ph, pm, g.relu,
               &buf);
      g.ForBlockOutputs(eb, [&](int64_t q, int64_t ei, int64_t r) {
        float* acc_all = unit_acc + r * part;
        const float* dys = dy + ((n * g.k * g.e + q * g.e + ei) * g.b + bi) * g.ho * g.wo * c;
        const int64_t p = g.pad(q), qh = g.nd == 2 ? pm - p : 0, qw = pm - p, d = g.dilations[q];
        const int64_t kh = g.kh(q), kw = g.kw(q), s = g.stride;
        for (int64_t i = 0; i < kh; ++i) {
          for (int64_t j = 0; j < kw; ++j) {
            float* acc = acc_all + (g.tap_offset[q] + i * kw + j) * c;
            for (int64_t ho = 0; ho < g.ho; ++ho) {
              const float* src = buf.data() + ((ho * s + qh + i * d) * wp + qw + j * d) * c;
              const float* grow = dys + ho * g.wo * c;
              if constexpr (CC > 0) {
                float a0[CC] = {}, a1[CC] = {};
                int64_t o = 0;
                for (; o + 1 < g.wo; o += 2) {
                  for (int64_t ch = 0; ch < CC; ++ch) {
                    a0[ch] += src[o * s * CC + ch] * grow[o * CC + ch];
                    a1[ch] += src[(o + 1) * s * CC + ch] * grow[(o + 1) * CC + ch];
                  }
                }
                for (; o < g.wo; ++o)
                  for (int64_t ch = 0; ch < CC; ++ch) a0[ch] += src[o * s * CC + ch] * grow[o * CC + ch];
                for (int64_t ch = 0; ch < CC; ++ch) acc[ch] += a0[ch] + a1[ch];
              } else {
                for (int64_t o = 0; o < g.wo; ++o)
                  for (int64_t ch = 0; ch < c; ++ch) acc[ch] += src[o * s * c + ch] * grow[o * c + ch];
              }
            }
          }
        }
      });
    }
  });
  // Sum the chunks of every input block into its kernels' weight gradients.
  const int64_t e_blocks = g.lead_n * g.e;
  for (int64_t t = 0; t < e_blocks * part; ++t) dw[t] = 0.0f;
  for (int64_t u = 0; u < inputs * chunks; ++u) {
    const int64_t eb = (u / chunks) % g.ein, n = u / (chunks * g.ein);
    for (int64_t r = 0; r < g.edges_per_block(); ++r) {
      const int64_t ei = g.shared ? eb * g.repeat + r : eb % g.e;
      float* out = dw + (n * g.e + ei) * part;
      const float* src = partial.data() + u * unit_part + r * part;
      for (int64_t t = 0; t < part; ++t) out[t] += src[t];
    }
  }
}

// Dispatch on the channel count so the common ones get fixed-length inner loops.
#define JNAS_DISPATCH(FN, C, ...)            \
  switch (C) {                               \
    case 8: FN<8>(__VA_ARGS__); break;       \
    case 16: FN<16>(__VA_ARGS__); break;     \
    case 32: FN<32>(__VA_ARGS__); break;     \
    case 64: FN<64>(__VA_ARGS__); break;     \
    default: FN<0>(__VA_ARGS__); break;      \
  }

ffi::Error FwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, int64_t nd, int64_t stride, int64_t shared,
                   int64_t relu, int64_t repeat, ffi::Span<const int64_t> kernels,
                   ffi::Span<const int64_t> dilations) {
  Geometry g;
  ffi::Error err = MakeGeometry(x.dimensions(), w.dimensions(), nd, stride, shared != 0, relu != 0,
                                repeat, kernels, dilations, &g);
  if (err.failure()) return err;
  JNAS_DISPATCH(Forward, g.c, g, x.typed_data(), w.typed_data(), y->typed_data(), pool);
  return ffi::Error::Success();
}

ffi::Error DxImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                  ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> dx, int64_t nd,
                  int64_t stride, int64_t shared, int64_t relu, int64_t repeat,
                  ffi::Span<const int64_t> kernels, ffi::Span<const int64_t> dilations) {
  Geometry g;
  ffi::Error err = MakeGeometry(x.dimensions(), w.dimensions(), nd, stride, shared != 0, relu != 0,
                                repeat, kernels, dilations, &g);
  if (err.failure()) return err;
  JNAS_DISPATCH(InputGrad, g.c, g, dy.typed_data(), w.typed_data(), x.typed_data(),
                dx->typed_data(), pool);
  return ffi::Error::Success();
}

ffi::Error DwImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> x,
                  ffi::ResultBuffer<ffi::F32> dw, int64_t nd, int64_t stride, int64_t shared,
                  int64_t relu, int64_t repeat, ffi::Span<const int64_t> kernels,
                  ffi::Span<const int64_t> dilations) {
  Geometry g;
  ffi::Error err = MakeGeometry(x.dimensions(), dw->dimensions(), nd, stride, shared != 0,
                                relu != 0, repeat, kernels, dilations, &g);
  if (err.failure()) return err;
  JNAS_DISPATCH(WeightGrad, g.c, g, dy.typed_data(), x.typed_data(), dw->typed_data(), pool);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------
// 3x3-style 'same'-padded pooling, max and average, for several pool kinds of
// one input at once (a mixed op's pool candidates):
//   x: [*lead, E/R, B, *S, C] -> y: [*lead, P*E, B, *So, C], block p*E+e = pool_p(x[e/R]).
// As for the convolutions, R consecutive edges may share one input block; their outputs are
// copies, and the input gradient sums theirs.
// Max ignores padding and routes each window's gradient to its first maximal
// input (row-major tap order); average divides by the number of real inputs
// under the window (count_include_pad=False), as DARTS does.

struct PoolGeometry {
  int64_t nd, lead_n, ein, e, b, h, w, c, ho, wo, stride, kernel, repeat;
  std::vector<int64_t> kinds;  // 0: max, 1: avg
};

ffi::Error MakePoolGeometry(ffi::AnyBuffer::Dimensions xd, int64_t nd, int64_t stride,
                            int64_t kernel, int64_t repeat, ffi::Span<const int64_t> kinds,
                            PoolGeometry* g) {
  const int64_t rank = xd.size(), lead = rank - (nd + 3);
  if (nd < 1 || nd > 2 || lead < 0) return ffi::Error::InvalidArgument("jnas pool: bad rank");
  if (kernel < 1 || kernel % 2 == 0 || stride < 1 || repeat < 1 || kinds.size() == 0)
    return ffi::Error::InvalidArgument("jnas pool: bad kernel/stride/repeat/kinds");
  g->nd = nd;
  g->lead_n = 1;
  for (int64_t i = 0; i < lead; ++i) g->lead_n *= xd[i];
  g->ein = xd[lead];
  g->repeat = repeat;
  g->e = g->ein * repeat;
  g->b = xd[lead + 1];
  g->h = nd == 2 ? xd[lead + 2] : 1;
  g->w = xd[lead + 1 + nd];
  g->c = xd[rank - 1];
  g->stride = stride;
  g->kernel = kernel;
  g->kinds.assign(kinds.begin(), kinds.end());
  for (int64_t k : g->kinds)
    if (k != 0 && k != 1) return ffi::Error::InvalidArgument("jnas pool: kinds are 0 (max), 1 (avg)");
  g->ho = nd == 2 ? OutSize(g->h, stride) : 1;
  g->wo = OutSize(g->w, stride);
  return ffi::Error::Success();
}

// In-bounds window rows [*lo, *hi) (as input coordinates) of output position o.
inline void Window(int64_t o, int64_t s, int64_t k, int64_t n, int64_t* lo, int64_t* hi) {
  const int64_t p = (k - 1) / 2, start = o * s - p;
  *lo = std::max<int64_t>(start, 0);
  *hi = std::min<int64_t>(start + k, n);
}

// Calls f(output offset, r0, r1, c0, c1) for every output position of one slice, with its
// window's in-bounds input rows [r0, r1) and columns [c0, c1).
template <typename F>
void ForEachWindow(const PoolGeometry& g, const F& f) {
  const int64_t kh = g.nd == 2 ? g.kernel : 1;
  for (int64_t ho = 0; ho < g.ho; ++ho) {
    int64_t r0, r1;
    Window(ho, g.stride, kh, g.h, &r0, &r1);
    for (int64_t wo = 0; wo < g.wo; ++wo) {
      int64_t c0, c1;
      Window(wo, g.stride, g.kernel, g.w, &c0, &c1);
      f((ho * g.wo + wo) * g.c, r0, r1, c0, c1);
    }
  }
}

template <int64_t CC, typename Pool>
void PoolForward(const PoolGeometry& g, const float* x, float* y, Pool& pool) {
  const int64_t c = g.c, cn = CC > 0 ? CC : c, np = g.kinds.size();
  const int64_t out_slice = g.ho * g.wo * c;
  ParallelFor(pool, g.lead_n * g.ein * g.b, [&](int64_t u) {
    const int64_t bi = u % g.b, eb = (u / g.b) % g.ein, n = u / (g.b * g.ein);
    const float* xs = x + ((n * g.ein + eb) * g.b + bi) * g.h * g.w * c;
    for (int64_t q = 0; q < np; ++q) {
      // Edge eb*R's output; the other R-1 edges reading this block get copies.
      auto out_of = [&](int64_t r) {
        return y + ((n * np * g.e + q * g.e + eb * g.repeat + r) * g.b + bi) * out_slice;
      };
      float* ys = out_of(0);
      const bool is_max = g.kinds[q] == 0;
      ForEachWindow(g, [&](int64_t o, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        float* out = ys + o;
        for (int64_t ch = 0; ch < cn; ++ch)
          out[ch] = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t col = c0; col < c1; ++col) {
            const float* v = xs + (r * g.w + col) * c;
            if (is_max) {
              for (int64_t ch = 0; ch < cn; ++ch) out[ch] = v[ch] > out[ch] ? v[ch] : out[ch];
            } else {
              for (int64_t ch = 0; ch < cn; ++ch) out[ch] += v[ch];
            }
          }
        }
        if (!is_max) {
          const float inv = 1.0f / static_cast<float>((r1 - r0) * (c1 - c0));
          for (int64_t ch = 0; ch < cn; ++ch) out[ch] *= inv;
        }
      });
      for (int64_t r = 1; r < g.repeat; ++r) std::memcpy(out_of(r), ys, sizeof(float) * out_slice);
    }
  });
}

template <int64_t CC, typename Pool>
void PoolInputGrad(const PoolGeometry& g, const float* dy, const float* x, float* dx, Pool& pool) {
  const int64_t c = g.c, cn = CC > 0 ? CC : c, np = g.kinds.size(), slice = g.h * g.w * c;
  const int64_t out_slice = g.ho * g.wo * c;
  ParallelFor(pool, g.lead_n * g.ein * g.b, [&](int64_t u) {
    const int64_t bi = u % g.b, eb = (u / g.b) % g.ein, n = u / (g.b * g.ein);
    const float* xs = x + ((n * g.ein + eb) * g.b + bi) * slice;
    float* dxs = dx + ((n * g.ein + eb) * g.b + bi) * slice;
    std::memset(dxs, 0, sizeof(float) * slice);
    std::vector<float> best(cn);
    std::vector<int64_t> arg(cn);
    thread_local std::vector<float> summed;
    for (int64_t q = 0; q < np; ++q) {
      // The R edges reading this block share its windows: route the sum of their gradients.
      const float* gs = dy + ((n * np * g.e + q * g.e + eb * g.repeat) * g.b + bi) * out_slice;
      if (g.repeat > 1) {
        summed.assign(gs, gs + out_slice);
        for (int64_t r = 1; r < g.repeat; ++r) {
          const float* gr = gs + r * g.b * out_slice;
          for (int64_t t = 0; t < out_slice; ++t) summed[t] += gr[t];
        }
        gs = summed.data();
      }
      const bool is_max = g.kinds[q] == 0;
      ForEachWindow(g, [&](int64_t o, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        const float* gv = gs + o;
        if (is_max) {
          for (int64_t ch = 0; ch < cn; ++ch) {
            best[ch] = -std::numeric_limits<float>::infinity();
            arg[ch] = -1;
          }
          for (int64_t r = r0; r < r1; ++r) {
            for (int64_t col = c0; col < c1; ++col) {
              const int64_t pos = (r * g.w + col) * c;
              for (int64_t ch = 0; ch < cn; ++ch) {
                const bool better = xs[pos + ch] > best[ch];
                best[ch] = better ? xs[pos + ch] : best[ch];
                arg[ch] = better ? pos : arg[ch];
              }
            }
          }
          for (int64_t ch = 0; ch < cn; ++ch)
            if (arg[ch] >= 0) dxs[arg[ch] + ch] += gv[ch];
        } else {
          const float inv = 1.0f / static_cast<float>((r1 - r0) * (c1 - c0));
          for (int64_t r = r0; r < r1; ++r) {
            for (int64_t col = c0; col < c1; ++col) {
              float* d = dxs + (r * g.w + col) * c;
              for (int64_t ch = 0; ch < cn; ++ch) d[ch] += gv[ch] * inv;
            }
          }
        }
      });
    }
  });
}

ffi::Error PoolFwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                       ffi::ResultBuffer<ffi::F32> y, int64_t nd, int64_t stride, int64_t kernel,
                       int64_t repeat, ffi::Span<const int64_t> kinds) {
  PoolGeometry g;
  ffi::Error err = MakePoolGeometry(x.dimensions(), nd, stride, kernel, repeat, kinds, &g);
  if (err.failure()) return err;
  JNAS_DISPATCH(PoolForward, g.c, g, x.typed_data(), y->typed_data(), pool);
  return ffi::Error::Success();
}

ffi::Error PoolDxImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> x,
                      ffi::ResultBuffer<ffi::F32> dx, int64_t nd, int64_t stride, int64_t kernel,
                      int64_t repeat, ffi::Span<const int64_t> kinds) {
  PoolGeometry g;
  ffi::Error err = MakePoolGeometry(x.dimensions(), nd, stride, kernel, repeat, kinds, &g);
  if (err.failure()) return err;
  JNAS_DISPATCH(PoolInputGrad, g.c, g, dy.typed_data(), x.typed_data(), dx->typed_data(), pool);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------
// Batch norm in training mode over every axis but the edge and channel axes:
//   x: [*lead, E, B, *S, C], scale/bias/mean/var: [*lead, E, C].
// Forward: batch mean and biased variance (one pass, double accumulators), then
// y = (x - mean) * rsqrt(var + eps) * scale + bias. Backward: the closed form
// dx = k * (g - mean(g) - xhat * mean(g * xhat)), k = scale * rsqrt(var + eps),
// from one pass of sums and one elementwise pass. XLA:CPU's fusions for the
// kept-channel reductions run at 1-3 GB/s; these passes stream at memory speed.
// Each (lead, edge) problem is split into row chunks so that a few edges still
// keep every thread busy.

struct BnGeometry {
  int64_t units, rows, c, chunks;
  int64_t chunk_begin(int64_t i) const { return i * rows / chunks; }
};

ffi::Error MakeBnGeometry(ffi::AnyBuffer::Dimensions xd, ffi::AnyBuffer::Dimensions pd, int64_t nd,
                          int64_t threads, BnGeometry* g) {
  const int64_t rank = xd.size(), lead = rank - (nd + 3);
  if (nd < 1 || lead < 0 || static_cast<int64_t>(pd.size()) != lead + 2)
    return ffi::Error::InvalidArgument("jnas batch_norm: bad ranks");
  g->units = 1;
  for (int64_t i = 0; i <= lead; ++i) {
    if (xd[i] != pd[i]) return ffi::Error::InvalidArgument("jnas batch_norm: leading axes differ");
    g->units *= xd[i];
  }
  g->c = xd[rank - 1];
  if (pd[lead + 1] != g->c) return ffi::Error::InvalidArgument("jnas batch_norm: channels differ");
  g->rows = 1;
  for (int64_t i = lead + 1; i < rank - 1; ++i) g->rows *= xd[i];
  // About four work items per thread, none shorter than 64 rows.
  const int64_t want = (4 * std::max<int64_t>(threads, 1) + g->units - 1) / g->units;
  g->chunks = std::max<int64_t>(1, std::min<int64_t>(want, g->rows / 64));
  return ffi::Error::Success();
}

// Per (unit, chunk): sums over the chunk's rows of a(x, g) and b(x, g), per channel.
template <typename Pool, typename F>
std::vector<double> BnChunkSums(const BnGeometry& g, Pool& pool, const F& terms) {
  const int64_t c = g.c;
  std::vector<double> sums(g.units * g.chunks * 2 * c, 0.0);
  ParallelFor(pool, g.units * g.chunks, [&](int64_t u) {
    const int64_t unit = u / g.chunks, chunk = u % g.chunks;
    double* s = sums.data() + u * 2 * c;
    for (int64_t r = g.chunk_begin(chunk); r < g.chunk_begin(chunk + 1); ++r)
      terms(unit, (unit * g.rows + r) * c, s, s + c);
  });
  // Fold the chunks into the first chunk of each unit.
  for (int64_t unit = 0; unit < g.units; ++unit) {
    double* first = sums.data() + unit * g.chunks * 2 * c;
    for (int64_t k = 1; k < g.chunks; ++k)
      for (int64_t t = 0; t < 2 * c; ++t) first[t] += first[k * 2 * c + t];
  }
  return sums;
}

// out = a * u + b * v + d per channel, for every row of every unit (coefficients [units, 3, C]).
template <typename Pool>
void BnAffine(const BnGeometry& g, Pool& pool, const float* u_in, const float* v_in,
              const std::vector<float>& coef, float* out) {
  const int64_t c = g.c;
  ParallelFor(pool, g.units * g.chunks, [&](int64_t u) {
    const int64_t unit = u / g.chunks, chunk = u % g.chunks;
    const float* a = coef.data() + unit * 3 * c;
    const float* b = a + c;
    const float* d = b + c;
    for (int64_t r = g.chunk_begin(chunk); r < g.chunk_begin(chunk + 1); ++r) {
      const int64_t o = (unit * g.rows + r) * c;
      if (v_in) {
        for (int64_t ch = 0; ch < c; ++ch)
          out[o + ch] = a[ch] * u_in[o + ch] + b[ch] * v_in[o + ch] + d[ch];
      } else {
        for (int64_t ch = 0; ch < c; ++ch) out[o + ch] = a[ch] * u_in[o + ch] + d[ch];
      }
    }
  });
}

ffi::Error BnFwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                     ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> y,
                     ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> var,
                     int64_t nd, float eps) {
  BnGeometry g;
  ffi::Error err = MakeBnGeometry(x.dimensions(), scale.dimensions(), nd, pool.num_threads(), &g);
  if (err.failure()) return err;
  const float* xs = x.typed_data();
  const int64_t c = g.c;
  std::vector<double> sums = BnChunkSums(g, pool, [&](int64_t, int64_t o, double* s1, double* s2) {
    for (int64_t ch = 0; ch < c; ++ch) {
      const double v = xs[o + ch];
      s1[ch] += v;
      s2[ch] += v * v;
    }
  });
  std::vector<float> coef(g.units * 3 * c);
  const float* sc = scale.typed_data();
  const float* bi = bias.typed_data();
  for (int64_t unit = 0; unit < g.units; ++unit) {
    const double* s = sums.data() + unit * g.chunks * 2 * c;
    for (int64_t ch = 0; ch < c; ++ch) {
      const double m = s[ch] / g.rows, v = std::max(s[c + ch] / g.rows - m * m, 0.0);
      const double k = sc[unit * c + ch] / std::sqrt(v + eps);
      mean->typed_data()[unit * c + ch] = static_cast<float>(m);
      var->typed_data()[unit * c + ch] = static_cast<float>(v);
      coef[unit * 3 * c + ch] = static_cast<float>(k);
      coef[unit * 3 * c + 2 * c + ch] = static_cast<float>(bi[unit * c + ch] - m * k);
    }
  }
  BnAffine(g, pool, xs, nullptr, coef, y->typed_data());
  return ffi::Error::Success();
}

ffi::Error BnDxImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> x,
                    ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> mean,
                    ffi::Buffer<ffi::F32> var, ffi::ResultBuffer<ffi::F32> dx,
                    ffi::ResultBuffer<ffi::F32> dscale, ffi::ResultBuffer<ffi::F32> dbias,
                    int64_t nd, float eps) {
  BnGeometry g;
  ffi::Error err = MakeBnGeometry(x.dimensions(), scale.dimensions(), nd, pool.num_threads(), &g);
  if (err.failure()) return err;
  const float *gs = dy.typed_data(), *xs = x.typed_data(), *mu = mean.typed_data();
  const int64_t c = g.c;
  std::vector<double> sums =
      BnChunkSums(g, pool, [&](int64_t unit, int64_t o, double* sg, double* sgx) {
        const float* m = mu + unit * c;
        for (int64_t ch = 0; ch < c; ++ch) {
          const double gv = gs[o + ch];
          sg[ch] += gv;
          sgx[ch] += gv * (xs[o + ch] - m[ch]);
        }
      });
  // dx = a * g + b * x + d, with dbias = sum(g), dscale = sum(g * xhat).
  std::vector<float> coef(g.units * 3 * c);
  const float* sc = scale.typed_data();
  const float* vr = var.typed_data();
  const double n = static_cast<double>(g.rows);
  for (int64_t unit = 0; unit < g.units; ++unit) {
    const double* s = sums.data() + unit * g.chunks * 2 * c;
    for (int64_t ch = 0; ch < c; ++ch) {
      const int64_t p = unit * c + ch;
      const double inv = 1.0 / std::sqrt(static_cast<double>(vr[p]) + eps);
      const double db = s[ch], ds = s[c + ch] * inv, k = sc[p] * inv;
      const double b = -k * inv * ds / n;
      dbias->typed_data()[p] = static_cast<float>(db);
      dscale->typed_data()[p] = static_cast<float>(ds);
      coef[unit * 3 * c + ch] = static_cast<float>(k);
      coef[unit * 3 * c + c + ch] = static_cast<float>(b);
      coef[unit * 3 * c + 2 * c + ch] = static_cast<float>(-k * db / n - b * mu[p]);
    }
  }
  BnAffine(g, pool, gs, xs, coef, dx->typed_data());
  return ffi::Error::Success();
}

}  // namespace

// Every handler runs on XLA's intra-op thread pool and takes float32 buffers.
#define JNAS_BIND ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
using F32Arg = ffi::Buffer<ffi::F32>;

#define JNAS_ATTRS                                                                   \
  .Attr<int64_t>("nd").Attr<int64_t>("stride").Attr<int64_t>("shared")              \
      .Attr<int64_t>("relu").Attr<int64_t>("repeat")                                \
      .Attr<ffi::Span<const int64_t>>("kernels").Attr<ffi::Span<const int64_t>>("dilations")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasDepthwiseFwd, FwdImpl,
                              JNAS_BIND.Arg<F32Arg>().Arg<F32Arg>().Ret<F32Arg>() JNAS_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasDepthwiseDx, DxImpl,
                              JNAS_BIND.Arg<F32Arg>().Arg<F32Arg>().Arg<F32Arg>().Ret<F32Arg>()
                                  JNAS_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasDepthwiseDw, DwImpl,
                              JNAS_BIND.Arg<F32Arg>().Arg<F32Arg>().Ret<F32Arg>() JNAS_ATTRS);

#define JNAS_POOL_ATTRS                                                              \
  .Attr<int64_t>("nd").Attr<int64_t>("stride").Attr<int64_t>("kernel")              \
      .Attr<int64_t>("repeat").Attr<ffi::Span<const int64_t>>("kinds")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasPoolFwd, PoolFwdImpl,
                              JNAS_BIND.Arg<F32Arg>().Ret<F32Arg>() JNAS_POOL_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasPoolDx, PoolDxImpl,
                              JNAS_BIND.Arg<F32Arg>().Arg<F32Arg>().Ret<F32Arg>() JNAS_POOL_ATTRS);

#define JNAS_BN_ATTRS .Attr<int64_t>("nd").Attr<float>("eps")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasBatchNormFwd, BnFwdImpl,
                              JNAS_BIND.Arg<F32Arg>().Arg<F32Arg>().Arg<F32Arg>()
                                  .Ret<F32Arg>().Ret<F32Arg>().Ret<F32Arg>() JNAS_BN_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasBatchNormDx, BnDxImpl,
                              JNAS_BIND.Arg<F32Arg>().Arg<F32Arg>().Arg<F32Arg>().Arg<F32Arg>()
                                  .Arg<F32Arg>().Ret<F32Arg>().Ret<F32Arg>().Ret<F32Arg>()
                                      JNAS_BN_ATTRS);
