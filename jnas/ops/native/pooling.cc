// Pooling for XLA:CPU through the XLA FFI (jnas.ops.native).
//
// 3x3-style 'same'-padded pooling, max and average, for several pool kinds of
// one input at once (a mixed op's pool candidates):
//   x: [*lead, E/R, B, *S, C] -> y: [*lead, P*E, B, *So, C], block p*E+e = pool_p(x[e/R]).
// As for the convolutions, R consecutive edges may share one input block; their outputs are
// copies, and the input gradient sums theirs.
// Max ignores padding and routes each window's gradient to its first maximal
// input (row-major tap order); average divides by the number of real inputs
// under the window (count_include_pad=False), as DARTS does. A third kernel, the input
// gradient's transpose (pool v over x's windows, max at x's first maximal tap), makes the input
// gradient differentiable: a gradient of a gradient runs on these kernels too.

#include "common.h"

namespace {

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

// Pools v over x's windows: with kGather false (and v == x) the forward pass; with kGather true,
// max picks v at x's first maximal tap (the transpose of the input gradient below, which a
// gradient of a gradient needs) and average averages v.
template <int64_t CC, bool kGather, typename Pool>
void PoolWindows(const PoolGeometry& g, const float* x, const float* v, float* y, Pool& pool) {
  const int64_t c = g.c, cn = CC > 0 ? CC : c, np = g.kinds.size();
  const int64_t out_slice = g.ho * g.wo * c;
  ParallelFor(pool, g.lead_n * g.ein * g.b, [&](int64_t u) {
    const int64_t bi = u % g.b, eb = (u / g.b) % g.ein, n = u / (g.b * g.ein);
    const int64_t in_at = ((n * g.ein + eb) * g.b + bi) * g.h * g.w * c;
    const float* xs = x + in_at;
    const float* vs = v + in_at;
    std::vector<float> best(kGather ? cn : 0);
    for (int64_t q = 0; q < np; ++q) {
      // Edge eb*R's output; the other R-1 edges reading this block get copies.
      auto out_of = [&](int64_t r) {
        return y + ((n * np * g.e + q * g.e + eb * g.repeat + r) * g.b + bi) * out_slice;
      };
      float* ys = out_of(0);
      const bool is_max = g.kinds[q] == 0;
      ForEachWindow(g, [&](int64_t o, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        float* out = ys + o;
        for (int64_t ch = 0; ch < cn; ++ch) {
          out[ch] = is_max && !kGather ? -std::numeric_limits<float>::infinity() : 0.0f;
          if (kGather) best[ch] = -std::numeric_limits<float>::infinity();
        }
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t col = c0; col < c1; ++col) {
            const int64_t pos = (r * g.w + col) * c;
            const float* xv = xs + pos;
            const float* vv = vs + pos;
            if (is_max && kGather) {
              for (int64_t ch = 0; ch < cn; ++ch) {
                const bool better = xv[ch] > best[ch];
                best[ch] = better ? xv[ch] : best[ch];
                out[ch] = better ? vv[ch] : out[ch];
              }
            } else if (is_max) {
              for (int64_t ch = 0; ch < cn; ++ch) out[ch] = xv[ch] > out[ch] ? xv[ch] : out[ch];
            } else {
              for (int64_t ch = 0; ch < cn; ++ch) out[ch] += vv[ch];
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
void PoolForward(const PoolGeometry& g, const float* x, float* y, Pool& pool) {
  PoolWindows<CC, false>(g, x, x, y, pool);
}

template <int64_t CC, typename Pool>
void PoolGather(const PoolGeometry& g, const float* x, const float* v, float* y, Pool& pool) {
  PoolWindows<CC, true>(g, x, v, y, pool);
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

ffi::Error PoolGatherImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> v,
                          ffi::ResultBuffer<ffi::F32> y, int64_t nd, int64_t stride,
                          int64_t kernel, int64_t repeat, ffi::Span<const int64_t> kinds) {
  PoolGeometry g;
  ffi::Error err = MakePoolGeometry(x.dimensions(), nd, stride, kernel, repeat, kinds, &g);
  if (err.failure()) return err;
  JNAS_DISPATCH(PoolGather, g.c, g, x.typed_data(), v.typed_data(), y->typed_data(), pool);
  return ffi::Error::Success();
}

}  // namespace

#define JNAS_POOL_ATTRS                                                              \
  .Attr<int64_t>("nd").Attr<int64_t>("stride").Attr<int64_t>("kernel")              \
      .Attr<int64_t>("repeat").Attr<ffi::Span<const int64_t>>("kinds")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasPoolFwd, PoolFwdImpl,
                              JNAS_BIND.Arg<F32Arg>().Ret<F32Arg>() JNAS_POOL_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasPoolDx, PoolDxImpl,
                              JNAS_BIND.Arg<F32Arg>().Arg<F32Arg>().Ret<F32Arg>() JNAS_POOL_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasPoolGather, PoolGatherImpl,
                              JNAS_BIND.Arg<F32Arg>().Arg<F32Arg>().Ret<F32Arg>() JNAS_POOL_ATTRS);
