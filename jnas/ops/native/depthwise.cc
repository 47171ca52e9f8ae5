// Depthwise convolutions for XLA:CPU through the XLA FFI (jnas.ops.native).
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

#include "common.h"

namespace {

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

}  // namespace

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
