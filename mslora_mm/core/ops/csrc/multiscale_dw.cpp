// MSLoRA's multi-scale branches on CPU, s = sum_k GELU(DW_k(z) + b_k), as one
// kernel: one pass over z forward; backward, one pass for the branches'
// pre-activation gradients g_k = ds * GELU'(DW_k(z) + b_k) (recomputed, not
// saved), one for the input gradient of all branches at once, and one for
// every branch's weight and bias gradients (per thread, summed in order).
// s may be rows top:top+rows of the map only (a band of rows; z's other rows
// are read by the convolutions, zero padding beyond z). Maps are
// channels-last, (N, H, W, D) in memory; a branch's weight is used as
// (k, k, D). Vectorized over channels: the convolutions by the compiler
// (narrow channel blocks a run of pixels per tap), GELU with ATen's vector
// erf/exp (the formulas of ATen's GELU kernels).
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

struct Shape {
  int64_t n, h, w, d;  // z
  int64_t top, rows;   // the rows of s (and of ds, g) in z's rows
};

struct Branches {
  std::vector<at::Tensor> taps;  // (k, k, D) contiguous, kept alive
  std::vector<at::Tensor> bias;
  std::vector<int64_t> k;
  int64_t halo = 0;  // max k / 2
};

template <typename T>
struct Pointers {
  std::vector<const T*> w, b;
  explicit Pointers(const Branches& br) {
    for (size_t i = 0; i < br.k.size(); ++i) {
      w.push_back(br.taps[i].data_ptr<T>());
      b.push_back(br.bias[i].data_ptr<T>());
    }
  }
};

// out[0:n] += GELU(x[0:n])
template <typename T>
inline void add_gelu(const T* x, T* out, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  const Vec alpha(T(M_SQRT1_2)), one(T(1)), half(T(0.5));
  int64_t c = 0;
  for (; c + Vec::size() <= n; c += Vec::size()) {
    const Vec v = Vec::loadu(x + c);
    (Vec::loadu(out + c) + v * half * (one + (v * alpha).erf())).store(out + c);
  }
  for (; c < n; ++c)
    out[c] += x[c] * T(0.5) * (T(1) + std::erf(x[c] * T(M_SQRT1_2)));
}

// out[0:n] = dy[0:n] * GELU'(x[0:n])
template <typename T>
inline void gelu_grad(const T* x, const T* dy, T* out, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  const T beta = T(M_2_SQRTPI * M_SQRT1_2 * 0.5);
  const Vec alpha(T(M_SQRT1_2)), one(T(1)), half(T(0.5)), vbeta(beta),
      minus_half(T(-0.5));
  int64_t c = 0;
  for (; c + Vec::size() <= n; c += Vec::size()) {
    const Vec v = Vec::loadu(x + c);
    const Vec cdf = half * (one + (v * alpha).erf());
    const Vec pdf = vbeta * (v * v * minus_half).exp();
    (Vec::loadu(dy + c) * (cdf + v * pdf)).store(out + c);
  }
  for (; c < n; ++c) {
    const T cdf = T(0.5) * (T(1) + std::erf(x[c] * T(M_SQRT1_2)));
    const T pdf = beta * std::exp(x[c] * x[c] * T(-0.5));
    out[c] = dy[c] * (cdf + x[c] * pdf);
  }
}

// acc[q * C + c] += sum over the k x k taps of weight[tap] * map[pixel(tap)]
// at pixel (y, x + q), q < P, of image img (y in z's rows), channels
// c0 + c, c < C: pixel (y + i - p, x + q + j - p) for the convolution
// (sign +1, map z), (y - i + p, x + q - j + p) for its transpose (sign -1,
// map g: rows top:top+rows only). A run of P > 1 pixels must have every
// tap inside the row (for_runs); one pixel is checked.
template <typename T, int64_t C, int64_t P = 1>
inline void add_taps(T* acc, const T* map, const T* weight, int64_t k,
                     const Shape& s, int64_t img, int64_t y, int64_t x,
                     int64_t c0, int64_t sign) {
  const int64_t p = k / 2;
  const int64_t first = sign > 0 ? 0 : s.top;
  const int64_t height = sign > 0 ? s.h : s.rows;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t yy = y + sign * (i - p) - first;
    if (yy < 0 || yy >= height) continue;
    const T* row = map + (img * height + yy) * s.w * s.d + c0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t xx = x + sign * (j - p);
      if (P == 1 && (xx < 0 || xx >= s.w)) continue;
      const T* src = row + xx * s.d;
      const T* wt = weight + (i * k + j) * s.d + c0;
      for (int64_t q = 0; q < P; ++q)
        for (int64_t c = 0; c < C; ++c)
          acc[q * C + c] += wt[c] * src[q * s.d + c];
    }
  }
}

// Branch kk's pre-activation at pixels (img, y, x:x+P), channels c0:c0+C,
// as acc[q * C + c].
template <typename T, int64_t C, int64_t P>
inline void pre_activation(T* acc, const T* z, const Pointers<T>& br,
                           const Branches& b, size_t kk, const Shape& s,
                           int64_t img, int64_t y, int64_t x, int64_t c0) {
  for (int64_t q = 0; q < P; ++q)
    for (int64_t c = 0; c < C; ++c) acc[q * C + c] = br.b[kk][c0 + c];
  add_taps<T, C, P>(acc, z, br.w[kk], b.k[kk], s, img, y, x, c0, 1);
}

// dw[(i * k + j) * D + c] += sum_x g[img, y, x, c] * z[img, y+i-p, x+j-p, c]
// and db[c] += sum_x g[img, y, x, c], for one row y of s and one branch.
template <typename T, int64_t C>
inline void add_weight_grad(const T* z, const T* g, int64_t k, T* dw, T* db,
                            const Shape& s, int64_t img, int64_t y,
                            int64_t c0) {
  const int64_t p = k / 2;
  const T* grow = g + (img * s.rows + y - s.top) * s.w * s.d + c0;
  T acc[C];
  for (int64_t c = 0; c < C; ++c) acc[c] = 0;
  for (int64_t x = 0; x < s.w; ++x)
    for (int64_t c = 0; c < C; ++c) acc[c] += grow[x * s.d + c];
  for (int64_t c = 0; c < C; ++c) db[c0 + c] += acc[c];
  for (int64_t i = 0; i < k; ++i) {
    const int64_t yy = y + i - p;
    if (yy < 0 || yy >= s.h) continue;
    const T* zrow = z + (img * s.h + yy) * s.w * s.d + c0;
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t c = 0; c < C; ++c) acc[c] = 0;
      const int64_t x0 = std::max<int64_t>(0, p - j);
      const int64_t x1 = std::min<int64_t>(s.w, s.w + p - j);
      for (int64_t x = x0; x < x1; ++x) {
        const T* gx = grow + x * s.d;
        const T* zx = zrow + (x + j - p) * s.d;
        for (int64_t c = 0; c < C; ++c) acc[c] += gx[c] * zx[c];
      }
      T* out = dw + (i * k + j) * s.d + c0;
      for (int64_t c = 0; c < C; ++c) out[c] += acc[c];
    }
  }
}

template <typename Body, int64_t C>
inline int64_t blocks_of(int64_t c0, int64_t d, const Body& body) {
  for (; c0 + C <= d; c0 += C) body(std::integral_constant<int64_t, C>(), c0);
  return c0;
}

// body(std::integral_constant<int64_t, C>(), c0) over the D channels in
// blocks of C = 128, then 32, 24, 16, 8 and 1: compile-time lengths, so that
// the loops vectorize (128 measured fastest at D = 128; 24 and 16 keep
// Lite0's narrow ranks in one block).
template <typename Body>
inline void for_channels(int64_t d, const Body& body) {
  int64_t c0 = blocks_of<Body, 128>(0, d, body);
  c0 = blocks_of<Body, 32>(c0, d, body);
  c0 = blocks_of<Body, 24>(c0, d, body);
  c0 = blocks_of<Body, 16>(c0, d, body);
  c0 = blocks_of<Body, 8>(c0, d, body);
  blocks_of<Body, 1>(c0, d, body);
}

// body(std::integral_constant<int64_t, P>(), x) over the pixels x of a row
// of width w: runs of P pixels (P * C = 64 numbers: the tap loop's overhead
// shared by P pixels) where every tap of halo h stays inside the row, single
// pixels at the borders and for C < 8 or C >= 64.
template <int64_t C, typename Body>
inline void for_runs(int64_t w, int64_t halo, const Body& body) {
  constexpr int64_t P = C >= 8 && C < 64 ? 64 / C : 1;
  int64_t x = 0;
  if (P > 1) {
    for (; x < std::min(halo, w); ++x)
      body(std::integral_constant<int64_t, 1>(), x);
    for (; x + P + halo <= w; x += P)
      body(std::integral_constant<int64_t, P>(), x);
  }
  for (; x < w; ++x) body(std::integral_constant<int64_t, 1>(), x);
}

// body(img, y) for every row y of z (all) or of s (top:top+rows), split
// among the threads.
template <typename Body>
inline void for_rows(const Shape& s, bool all, const Body& body) {
  const int64_t first = all ? 0 : s.top, height = all ? s.h : s.rows;
  at::parallel_for(0, s.n * height, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row)
      body(row / height, first + row % height);
  });
}

Branches branches_of(const at::Tensor& z, const std::vector<at::Tensor>& w,
                     const std::vector<at::Tensor>& b) {
  TORCH_CHECK(z.device().is_cpu() && z.dim() == 4,
              "multiscale_dw: z must be a (N, D, H, W) CPU tensor, got ",
              z.sizes(), " on ", z.device());
  TORCH_CHECK(!w.empty() && b.size() == w.size(),
              "multiscale_dw: one (D,) bias per weight");
  Branches br;
  for (size_t i = 0; i < w.size(); ++i) {
    const int64_t k = w[i].size(-1);
    TORCH_CHECK(w[i].dim() == 4 && w[i].size(0) == z.size(1) &&
                    w[i].size(1) == 1 && w[i].size(2) == k && k % 2 == 1 &&
                    w[i].scalar_type() == z.scalar_type(),
                "multiscale_dw: weight ", i, " must be (D, 1, k, k), k odd, "
                "in z's dtype; got ", w[i].sizes());
    br.taps.push_back(w[i].reshape({z.size(1), k * k}).t().contiguous());
    TORCH_CHECK(b[i].dim() == 1 && b[i].size(0) == z.size(1) &&
                    b[i].scalar_type() == z.scalar_type(),
                "multiscale_dw: bias ", i, " must be (D,) in z's dtype");
    br.bias.push_back(b[i].contiguous());
    br.k.push_back(k);
    br.halo = std::max(br.halo, k / 2);
  }
  return br;
}

Shape shape_of(const at::Tensor& z, int64_t top, int64_t rows) {
  TORCH_CHECK(top >= 0 && rows >= 1 && top + rows <= z.size(2),
              "multiscale_dw: rows ", top, ":", top + rows, " outside z's ",
              z.size(2), " rows");
  return {z.size(0), z.size(2), z.size(3), z.size(1), top, rows};
}

}  // namespace

// s = sum_k GELU(DW_k(z) + b_k), rows top:top+rows: (N, D, rows, W),
// channels-last.
at::Tensor multiscale_dw_forward(const at::Tensor& z_in,
                                 const std::vector<at::Tensor>& weights,
                                 const std::vector<at::Tensor>& biases,
                                 int64_t top, int64_t rows) {
  const Branches b = branches_of(z_in, weights, biases);
  const auto z = z_in.contiguous(at::MemoryFormat::ChannelsLast);
  const Shape s = shape_of(z, top, rows);
  const auto layout = at::MemoryFormat::ChannelsLast;
  auto out = at::empty({s.n, s.d, s.rows, s.w},
                       z.options().memory_format(layout));
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "multiscale_dw_forward", [&] {
    const Pointers<scalar_t> br(b);
    const scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for_rows(s, false, [&](int64_t img, int64_t y) {
      for_channels(s.d, [&](auto block, int64_t c0) {
        constexpr int64_t C = decltype(block)::value;
        for_runs<C>(s.w, b.halo, [&](auto run, int64_t x) {
          constexpr int64_t P = decltype(run)::value;
          scalar_t sum[P * C], acc[P * C];
          for (int64_t c = 0; c < P * C; ++c) sum[c] = 0;
          for (size_t kk = 0; kk < b.k.size(); ++kk) {
            pre_activation<scalar_t, C, P>(acc, zp, br, b, kk, s, img, y, x,
                                           c0);
            add_gelu(acc, sum, P * C);
          }
          scalar_t* o = op + ((img * s.rows + y - s.top) * s.w + x) * s.d;
          for (int64_t q = 0; q < P; ++q)
            for (int64_t c = 0; c < C; ++c) o[q * s.d + c0 + c] = sum[q * C + c];
        });
      });
    });
  });
  return out;
}

// Gradients of the forward's output (ds, rows top:top+rows) to z and to
// every branch's weight and bias: {dz, dw_0, ..., dw_K-1, db_0, ...,
// db_K-1}.
std::vector<at::Tensor> multiscale_dw_backward(
    const at::Tensor& z_in, const at::Tensor& ds_in,
    const std::vector<at::Tensor>& weights,
    const std::vector<at::Tensor>& biases, int64_t top, int64_t rows) {
  const Branches b = branches_of(z_in, weights, biases);
  const auto z = z_in.contiguous(at::MemoryFormat::ChannelsLast);
  const auto ds = ds_in.contiguous(at::MemoryFormat::ChannelsLast);
  const Shape s = shape_of(z, top, rows);
  TORCH_CHECK(ds.dim() == 4 && ds.size(0) == s.n && ds.size(1) == s.d &&
                  ds.size(2) == s.rows && ds.size(3) == s.w &&
                  ds.scalar_type() == z.scalar_type(),
              "multiscale_dw: the output gradient must be (N, D, rows, W) in "
              "z's dtype, got ", ds.sizes());
  const int64_t K = b.k.size(), plane = s.n * s.rows * s.w * s.d;
  // every branch's k * k * D weight then D bias gradients, one slot per
  // worker, summed in a fixed order afterwards
  std::vector<int64_t> offsets{0};
  for (int64_t kk = 0; kk < K; ++kk)
    offsets.push_back(offsets.back() + (b.k[kk] * b.k[kk] + 1) * s.d);
  const int64_t out_rows = s.n * s.rows;
  const int64_t workers = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), out_rows));
  auto g = at::empty({K, s.n, s.rows, s.w, s.d}, z.options());
  auto dz = at::empty_like(z, at::MemoryFormat::ChannelsLast);
  auto partial = at::zeros({workers, offsets.back()}, z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "multiscale_dw_backward", [&] {
    const Pointers<scalar_t> br(b);
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const scalar_t* dsp = ds.data_ptr<scalar_t>();
    scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* dzp = dz.data_ptr<scalar_t>();
    scalar_t* pp = partial.data_ptr<scalar_t>();
    for_rows(s, false, [&](int64_t img, int64_t y) {  // g_k
      for_channels(s.d, [&](auto block, int64_t c0) {
        constexpr int64_t C = decltype(block)::value;
        for_runs<C>(s.w, b.halo, [&](auto run, int64_t x) {
          constexpr int64_t P = decltype(run)::value;
          const int64_t at =
              ((img * s.rows + y - s.top) * s.w + x) * s.d + c0;
          scalar_t acc[P * C];
          for (int64_t kk = 0; kk < K; ++kk) {
            pre_activation<scalar_t, C, P>(acc, zp, br, b, kk, s, img, y, x,
                                           c0);
            for (int64_t q = 0; q < P; ++q)
              gelu_grad(acc + q * C, dsp + at + q * s.d,
                        gp + kk * plane + at + q * s.d, C);
          }
        });
      });
    });
    for_rows(s, true, [&](int64_t img, int64_t y) {  // dz
      for_channels(s.d, [&](auto block, int64_t c0) {
        constexpr int64_t C = decltype(block)::value;
        for_runs<C>(s.w, b.halo, [&](auto run, int64_t x) {
          constexpr int64_t P = decltype(run)::value;
          scalar_t acc[P * C];
          for (int64_t c = 0; c < P * C; ++c) acc[c] = 0;
          for (int64_t kk = 0; kk < K; ++kk)
            add_taps<scalar_t, C, P>(acc, gp + kk * plane, br.w[kk], b.k[kk],
                                     s, img, y, x, c0, -1);
          scalar_t* o = dzp + ((img * s.h + y) * s.w + x) * s.d;
          for (int64_t q = 0; q < P; ++q)
            for (int64_t c = 0; c < C; ++c) o[q * s.d + c0 + c] = acc[q * C + c];
        });
      });
    });
    at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
      for (int64_t worker = begin; worker < end; ++worker) {  // dw, db
        scalar_t* slot = pp + worker * offsets.back();
        for (int64_t row = out_rows * worker / workers;
             row < out_rows * (worker + 1) / workers; ++row)
          for (int64_t kk = 0; kk < K; ++kk) {
            scalar_t* dw = slot + offsets[kk];
            scalar_t* db = dw + b.k[kk] * b.k[kk] * s.d;
            for_channels(s.d, [&](auto block, int64_t c0) {
              add_weight_grad<scalar_t, decltype(block)::value>(
                  zp, gp + kk * plane, b.k[kk], dw, db, s, row / s.rows,
                  s.top + row % s.rows, c0);
            });
          }
      }
    });
  });
  const auto total = partial.sum(0);
  std::vector<at::Tensor> out{dz};
  for (int64_t kk = 0; kk < K; ++kk) {
    const int64_t k = b.k[kk];
    out.push_back(total.narrow(0, offsets[kk], k * k * s.d)
                      .view({k * k, s.d}).t().reshape({s.d, 1, k, k}));
  }
  for (int64_t kk = 0; kk < K; ++kk)
    out.push_back(total.narrow(0, offsets[kk + 1] - s.d, s.d));
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &multiscale_dw_forward,
        "sum_k GELU(DW_k(z) + b_k) of channels-last maps");
  m.def("backward", &multiscale_dw_backward,
        "gradients of the forward to z and every branch's weight and bias");
}
