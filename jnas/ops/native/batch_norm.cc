// Batch norm for XLA:CPU through the XLA FFI (jnas.ops.native).
//
// Batch norm in training mode over every axis but the edge and channel axes:
//   x: [*lead, E, B, *S, C], scale/bias/mean/var: [*lead, E, C].
// Forward: batch mean and biased variance (one pass, double accumulators), then
// y = (x - mean) * rsqrt(var + eps) * scale + bias. Backward: the closed form
// dx = k * (g - mean(g) - xhat * mean(g * xhat)), k = scale * rsqrt(var + eps),
// from one pass of sums and one elementwise pass. XLA:CPU's fusions for the
// kept-channel reductions run at 1-3 GB/s; these passes stream at memory speed.
// Each (lead, edge) problem is split into row chunks so that a few edges still
// keep every thread busy.

#include "common.h"

namespace {

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

#define JNAS_BN_ATTRS .Attr<int64_t>("nd").Attr<float>("eps")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasBatchNormFwd, BnFwdImpl,
                              JNAS_BIND.Arg<F32Arg>().Arg<F32Arg>().Arg<F32Arg>()
                                  .Ret<F32Arg>().Ret<F32Arg>().Ret<F32Arg>() JNAS_BN_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JnasBatchNormDx, BnDxImpl,
                              JNAS_BIND.Arg<F32Arg>().Arg<F32Arg>().Arg<F32Arg>().Arg<F32Arg>()
                                  .Arg<F32Arg>().Ret<F32Arg>().Ret<F32Arg>().Ret<F32Arg>()
                                      JNAS_BN_ATTRS);
