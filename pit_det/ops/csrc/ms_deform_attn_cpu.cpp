// Fused multi-scale deformable attention for the CPU: bilinear sampling (zero padding, align_corners=False),
// attention weighting and the sum over levels and points in one pass, without materialising sampled values.
// Same contract as mmcv's multi_scale_deformable_attn_pytorch:
//   value (B, S, H, D), spatial_shapes (L, 2) [h, w], level_start_index (L,),
//   sampling_locations (B, Q, H, L, P, 2) [x, y] in [0, 1], attention_weights (B, Q, H, L, P) -> (B, Q, H * D).
//
// The loops are compiled three times, for AVX-512, AVX2 + FMA and the baseline ISA (GCC/Clang target attributes),
// and the widest the CPU runs is picked at load time (select_isa, called with torch's own choice,
// torch.backends.cpu.get_cpu_capability(), which ATEN_CPU_CAPABILITY overrides): the binary does not assume the
// machine it was built on. Each output row is accumulated in registers for the usual head sizes (D = 32, 64) and
// stored once; sample coordinates are computed in the tensors' precision, as mmcv's CUDA kernel does.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <string>
#include <vector>

namespace {

struct Args {
  const void* value;
  const void* loc;
  const void* attn;
  const void* grad_out;
  void* out;  // forward: the output; backward: grad_value
  void* grad_loc;
  void* grad_attn;
  const int64_t* shapes;
  const int64_t* starts;
  int64_t B, S, H, D, Q, L, P;
};

// Bilinear taps of one sample in pixel coordinates (x, y): the four corners' element offsets (-1: outside the
// map, zero padding) and weights, and the fractional parts the gradients need.
template <typename T>
struct Taps {
  int64_t offset[4];
  T weight[4];
  T lx, ly;
};

// false when no corner of (x, y) lies inside the map (x = loc_x * w - 0.5: align_corners=False)
template <typename T>
__attribute__((always_inline)) inline bool taps(T loc_x, T loc_y, int64_t h, int64_t w, int64_t row_stride,
                                                Taps<T>& t) {
  const T x = loc_x * static_cast<T>(w) - T(0.5), y = loc_y * static_cast<T>(h) - T(0.5);
  if (!(x > T(-1) && y > T(-1) && x < static_cast<T>(w) && y < static_cast<T>(h))) return false;
  const T xf = std::floor(x), yf = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(xf), y0 = static_cast<int64_t>(yf);
  t.lx = x - xf;
  t.ly = y - yf;
  const T hx = T(1) - t.lx, hy = T(1) - t.ly;
  t.weight[0] = hy * hx;
  t.weight[1] = hy * t.lx;
  t.weight[2] = t.ly * hx;
  t.weight[3] = t.ly * t.lx;
  const bool x0_in = x0 >= 0, x1_in = x0 + 1 < w, y0_in = y0 >= 0, y1_in = y0 + 1 < h;
  const int64_t base = (y0 * w + x0) * row_stride;
  t.offset[0] = (y0_in && x0_in) ? base : -1;
  t.offset[1] = (y0_in && x1_in) ? base + row_stride : -1;
  t.offset[2] = (y1_in && x0_in) ? base + w * row_stride : -1;
  t.offset[3] = (y1_in && x1_in) ? base + (w + 1) * row_stride : -1;
  return true;
}

// A vector of kBytes (64: one AVX-512 register, 32: one AVX2 register, 16: SSE) of floats or doubles, a GCC/Clang
// vector extension; each ISA's loops use their register's width (through a traits class: GCC drops vector_size
// from an alias template of a dependent type).
template <typename T, int kBytes>
struct RowOf;
#define PIT_DET_ROW(T, BYTES)                                    \
  template <>                                                    \
  struct RowOf<T, BYTES> {                                       \
    typedef T type __attribute__((vector_size(BYTES)));          \
  };
PIT_DET_ROW(float, 64)
PIT_DET_ROW(float, 32)
PIT_DET_ROW(float, 16)
PIT_DET_ROW(double, 64)
PIT_DET_ROW(double, 32)
PIT_DET_ROW(double, 16)
template <typename T, int kBytes>
using Row = typename RowOf<T, kBytes>::type;

template <typename R, typename T>
__attribute__((always_inline)) inline R load_row(const T* p) {
  R r;
  __builtin_memcpy(&r, p, sizeof(r));
  return r;
}

// Every corner inside its map of the samples of one (batch, query, head) output row, D channels per head:
// visit(c, weight, row) with the corner's index, its attention weight times its bilinear weight, and its value row.
template <typename T, typename Visit>
__attribute__((always_inline)) inline void for_each_corner(const Args& a, int64_t D, int64_t bq, int64_t h,
                                                           Visit&& visit) {
  const int64_t HD = a.H * D;
  const T* v = static_cast<const T*>(a.value) + ((bq / a.Q) * a.S * a.H + h) * D;
  const int64_t first = (bq * a.H + h) * a.L * a.P;
  const T* lp = static_cast<const T*>(a.loc) + 2 * first;
  const T* ap = static_cast<const T*>(a.attn) + first;
  Taps<T> t;
  for (int64_t l = 0; l < a.L; ++l) {
    const int64_t hl = a.shapes[2 * l], wl = a.shapes[2 * l + 1];
    const T* level = v + a.starts[l] * HD;
    for (int64_t p = 0; p < a.P; ++p, lp += 2, ++ap) {
      if (!taps(lp[0], lp[1], hl, wl, HD, t)) continue;
      for (int c = 0; c < 4; ++c) {
        if (t.offset[c] >= 0) visit(c, *ap * t.weight[c], level + t.offset[c]);
      }
    }
  }
}

// One output row whose head size kD is a multiple of a Row: the sum over levels and points of the weighted taps
// stays in vector registers and is stored once.
template <typename T, int kD, int kBytes>
__attribute__((always_inline)) inline void forward_row(const Args& a, int64_t bq, int64_t h) {
  using R = Row<T, kBytes>;
  constexpr int kRows = kD * sizeof(T) / kBytes, kLanes = kBytes / sizeof(T);
  // one accumulator per corner: four independent chains of multiply-adds rather than one four times as long
  R acc[4][kRows];
  for (int c = 0; c < 4; ++c)
    for (int r = 0; r < kRows; ++r) acc[c][r] = R{};
  for_each_corner<T>(a, kD, bq, h, [&](int c, T wc, const T* row) __attribute__((always_inline)) {
    for (int r = 0; r < kRows; ++r) acc[c][r] += wc * load_row<R>(row + r * kLanes);
  });
  T* out = static_cast<T*>(a.out) + (bq * a.H + h) * kD;
  for (int r = 0; r < kRows; ++r) {
    const R sum = (acc[0][r] + acc[1][r]) + (acc[2][r] + acc[3][r]);
    __builtin_memcpy(out + r * kLanes, &sum, kBytes);
  }
}

// Any head size and number of samples: corner by corner, accumulated into the output row.
template <typename T>
__attribute__((always_inline)) inline void forward_row_any(const Args& a, int64_t bq, int64_t h) {
  const int64_t D = a.D;
  T* out = static_cast<T*>(a.out) + (bq * a.H + h) * D;
  for (int64_t d = 0; d < D; ++d) out[d] = T(0);
  for_each_corner<T>(a, D, bq, h, [&](int, T wc, const T* row) __attribute__((always_inline)) {
    for (int64_t d = 0; d < D; ++d) out[d] += wc * row[d];
  });
}

template <typename T, int kBytes>
__attribute__((always_inline)) inline void forward_rows(const Args& a, int64_t begin, int64_t end) {
  for (int64_t bq = begin; bq < end; ++bq) {
    for (int64_t h = 0; h < a.H; ++h) {
      if (a.D == 32) {
        forward_row<T, 32, kBytes>(a, bq, h);
      } else if (a.D == 64) {
        forward_row<T, 64, kBytes>(a, bq, h);
      } else {
        forward_row_any<T>(a, bq, h);
      }
    }
  }
}

// Gradients of the (batch, head) pairs [begin, end): one task alone writes grad_value[b, :, h, :], no atomics.
// kD > 0: the head size known at compile time, each row handled in vectors of kBytes.
template <typename T, int kD, int kBytes>
__attribute__((always_inline)) inline void backward_heads(const Args& a, int64_t begin, int64_t end) {
  using R = Row<T, kBytes>;
  constexpr int kLanes = kBytes / sizeof(T), kRows = kD > 0 ? kD / kLanes : 1;
  const int64_t D = kD > 0 ? kD : a.D, HD = a.H * D;
  Taps<T> t;
  for (int64_t bh = begin; bh < end; ++bh) {
    const int64_t b = bh / a.H, h = bh % a.H;
    const int64_t head_off = (b * a.S * a.H + h) * D;
    const T* v = static_cast<const T*>(a.value) + head_off;
    T* gv = static_cast<T*>(a.out) + head_off;
    for (int64_t q = 0; q < a.Q; ++q) {
      const int64_t bq = b * a.Q + q;
      const T* g = static_cast<const T*>(a.grad_out) + (bq * a.H + h) * D;
      R g_rows[kRows];
      if constexpr (kD > 0) {
        for (int r = 0; r < kRows; ++r) g_rows[r] = load_row<R>(g + r * kLanes);
      }
      const int64_t first = (bq * a.H + h) * a.L * a.P;
      for (int64_t l = 0; l < a.L; ++l) {
        const int64_t hl = a.shapes[2 * l], wl = a.shapes[2 * l + 1];
        const int64_t level_off = a.starts[l] * HD;
        for (int64_t p = 0; p < a.P; ++p) {
          const int64_t i = first + l * a.P + p;
          const T* lp = static_cast<const T*>(a.loc) + 2 * i;
          if (!taps(lp[0], lp[1], hl, wl, HD, t)) continue;
          const T at = static_cast<const T*>(a.attn)[i];
          T dots[4] = {0, 0, 0, 0};
          for (int c = 0; c < 4; ++c) {
            if (t.offset[c] < 0) continue;
            const T* src = v + level_off + t.offset[c];
            T* dst = gv + level_off + t.offset[c];
            const T wgt = at * t.weight[c];
            if constexpr (kD > 0) {
              R dot{};
              for (int r = 0; r < kRows; ++r) {
                dot += g_rows[r] * load_row<R>(src + r * kLanes);
                const R updated = load_row<R>(dst + r * kLanes) + wgt * g_rows[r];
                __builtin_memcpy(dst + r * kLanes, &updated, kBytes);
              }
              T total = 0;
              for (int k = 0; k < kLanes; ++k) total += dot[k];
              dots[c] = total;
            } else {
              T dot = 0;
              for (int64_t d = 0; d < D; ++d) {
                dot += g[d] * src[d];
                dst[d] += wgt * g[d];
              }
              dots[c] = dot;
            }
          }
          // d weight / d x and d y of the corners (0, 0), (1, 0), (0, 1), (1, 1)
          const T hx = T(1) - t.lx, hy = T(1) - t.ly;
          const T g_x = -hy * dots[0] + hy * dots[1] - t.ly * dots[2] + t.ly * dots[3];
          const T g_y = -hx * dots[0] - t.lx * dots[1] + hx * dots[2] + t.lx * dots[3];
          static_cast<T*>(a.grad_attn)[i] =
              t.weight[0] * dots[0] + t.weight[1] * dots[1] + t.weight[2] * dots[2] + t.weight[3] * dots[3];
          T* gl = static_cast<T*>(a.grad_loc) + 2 * i;
          gl[0] = at * g_x * static_cast<T>(wl);
          gl[1] = at * g_y * static_cast<T>(hl);
        }
      }
    }
  }
}

template <typename T, int kBytes>
__attribute__((always_inline)) inline void backward_rows(const Args& a, int64_t begin, int64_t end) {
  if (a.D == 32) {
    backward_heads<T, 32, kBytes>(a, begin, end);
  } else if (a.D == 64) {
    backward_heads<T, 64, kBytes>(a, begin, end);
  } else {
    backward_heads<T, 0, kBytes>(a, begin, end);
  }
}

using RangeFn = void (*)(const Args&, int64_t, int64_t);

struct Kernels {
  const char* isa;
  RangeFn forward_f32, forward_f64, backward_f32, backward_f64;
};

#define PIT_DET_KERNELS(NAME, BYTES, TARGET)                                                                    \
  TARGET void NAME##_forward_f32(const Args& a, int64_t b, int64_t e) { forward_rows<float, BYTES>(a, b, e); } \
  TARGET void NAME##_forward_f64(const Args& a, int64_t b, int64_t e) { forward_rows<double, BYTES>(a, b, e); }\
  TARGET void NAME##_backward_f32(const Args& a, int64_t b, int64_t e) { backward_rows<float, BYTES>(a, b, e); }\
  TARGET void NAME##_backward_f64(const Args& a, int64_t b, int64_t e) { backward_rows<double, BYTES>(a, b, e); }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PIT_DET_X86 1
#define PIT_DET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi2")))
PIT_DET_KERNELS(avx512, 64, PIT_DET_AVX512)
PIT_DET_KERNELS(avx2, 32, __attribute__((target("avx2,fma,bmi2"))))

// The encoder's and decoder's case on AVX-512, float32 with 16 samples (levels x points) per head: the taps of all
// 16 in one pass of 16-lane instructions (one sample per lane), then 64 corner rows summed into registers.
template <int kD>
PIT_DET_AVX512 inline void forward_row16_avx512(const Args& a, const float* lane_w, const int32_t* lane_wi,
                                                const float* lane_h, const int32_t* lane_hi,
                                                const int32_t* lane_start, const float* zeros, int64_t bq,
                                                int64_t h) {
  constexpr int kRows = kD / 16;
  const int64_t HD = a.H * kD;
  const float* v = static_cast<const float*>(a.value) + ((bq / a.Q) * a.S * a.H + h) * kD;
  const int64_t first = (bq * a.H + h) * 16;
  const float* lp = static_cast<const float*>(a.loc) + 2 * first;
  const __m512 W = _mm512_load_ps(lane_w), Hh = _mm512_load_ps(lane_h);
  const __m512i WI = _mm512_load_si512(lane_wi), HI = _mm512_load_si512(lane_hi);
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  const __m512 xy0 = _mm512_loadu_ps(lp), xy1 = _mm512_loadu_ps(lp + 16);
  const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), low = _mm512_set1_ps(-2.0f);
  __m512 x = _mm512_fmsub_ps(_mm512_permutex2var_ps(xy0, even, xy1), W, half);
  __m512 y = _mm512_fmsub_ps(_mm512_permutex2var_ps(xy0, odd, xy1), Hh, half);
  // to [-2, size + 1]: far-away locations cannot overflow the integer conversion; max gives -2 for a NaN
  x = _mm512_min_ps(_mm512_max_ps(x, low), _mm512_add_ps(W, one));
  y = _mm512_min_ps(_mm512_max_ps(y, low), _mm512_add_ps(Hh, one));
  const __m512 xf = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512 yf = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512i x0 = _mm512_cvttps_epi32(xf), y0 = _mm512_cvttps_epi32(yf);
  const __m512 lx = _mm512_sub_ps(x, xf), ly = _mm512_sub_ps(y, yf);
  const __m512 hx = _mm512_sub_ps(one, lx), hy = _mm512_sub_ps(one, ly);
  const __m512i zero_i = _mm512_setzero_si512(), minus1 = _mm512_set1_epi32(-1), one_i = _mm512_set1_epi32(1);
  const __m512i x1 = _mm512_add_epi32(x0, one_i), y1 = _mm512_add_epi32(y0, one_i);
  const __mmask16 x0_in = _mm512_cmpge_epi32_mask(x0, zero_i) & _mm512_cmplt_epi32_mask(x0, WI);
  const __mmask16 x1_in = _mm512_cmpge_epi32_mask(x1, zero_i) & _mm512_cmplt_epi32_mask(x1, WI);
  const __mmask16 y0_in = _mm512_cmpge_epi32_mask(y0, zero_i) & _mm512_cmplt_epi32_mask(y0, HI);
  const __mmask16 y1_in = _mm512_cmpge_epi32_mask(y1, zero_i) & _mm512_cmplt_epi32_mask(y1, HI);
  const __m512 at = _mm512_loadu_ps(static_cast<const float*>(a.attn) + first);
  const __m512 at_hy = _mm512_mul_ps(at, hy), at_ly = _mm512_mul_ps(at, ly);
  const __m512i pos = _mm512_add_epi32(_mm512_loadu_si512(lane_start),
                                       _mm512_add_epi32(_mm512_mullo_epi32(y0, WI), x0));
  const __mmask16 in[4] = {static_cast<__mmask16>(y0_in & x0_in), static_cast<__mmask16>(y0_in & x1_in),
                           static_cast<__mmask16>(y1_in & x0_in), static_cast<__mmask16>(y1_in & x1_in)};
  const __m512 weight[4] = {_mm512_mul_ps(at_hy, hx), _mm512_mul_ps(at_hy, lx), _mm512_mul_ps(at_ly, hx),
                            _mm512_mul_ps(at_ly, lx)};
  const __m512i corner[4] = {pos, _mm512_add_epi32(pos, one_i), _mm512_add_epi32(pos, WI),
                             _mm512_add_epi32(_mm512_add_epi32(pos, WI), one_i)};
  alignas(64) float wgt[4][16];
  alignas(64) int32_t at_pos[4][16];
  for (int c = 0; c < 4; ++c) {
    _mm512_store_ps(wgt[c], _mm512_maskz_mov_ps(in[c], weight[c]));
    _mm512_store_si512(at_pos[c], _mm512_mask_mov_epi32(minus1, in[c], corner[c]));
  }
  __m512 acc[4][kRows];
  for (int c = 0; c < 4; ++c)
    for (int r = 0; r < kRows; ++r) acc[c][r] = _mm512_setzero_ps();
  for (int i = 0; i < 16; ++i) {
    for (int c = 0; c < 4; ++c) {
      const int32_t pc = at_pos[c][i];
      const float* row = pc >= 0 ? v + static_cast<int64_t>(pc) * HD : zeros;
      const __m512 wc = _mm512_set1_ps(wgt[c][i]);
      for (int r = 0; r < kRows; ++r) acc[c][r] = _mm512_fmadd_ps(wc, _mm512_loadu_ps(row + 16 * r), acc[c][r]);
    }
  }
  float* out = static_cast<float*>(a.out) + (bq * a.H + h) * kD;
  for (int r = 0; r < kRows; ++r) {
    _mm512_storeu_ps(out + 16 * r, _mm512_add_ps(_mm512_add_ps(acc[0][r], acc[1][r]),
                                                 _mm512_add_ps(acc[2][r], acc[3][r])));
  }
}

PIT_DET_AVX512 void avx512_forward16_f32(const Args& a, int64_t begin, int64_t end) {
  if (!(a.L * a.P == 16 && (a.D == 32 || a.D == 64) && a.S < (int64_t(1) << 30))) {
    avx512_forward_f32(a, begin, end);
    return;
  }
  alignas(64) float lane_w[16], lane_h[16], zeros[64] = {};
  alignas(64) int32_t lane_wi[16], lane_hi[16], lane_start[16];
  for (int i = 0; i < 16; ++i) {
    const int64_t l = i / a.P;
    lane_hi[i] = static_cast<int32_t>(a.shapes[2 * l]);
    lane_wi[i] = static_cast<int32_t>(a.shapes[2 * l + 1]);
    lane_h[i] = static_cast<float>(lane_hi[i]);
    lane_w[i] = static_cast<float>(lane_wi[i]);
    lane_start[i] = static_cast<int32_t>(a.starts[l]);
  }
  for (int64_t bq = begin; bq < end; ++bq) {
    for (int64_t h = 0; h < a.H; ++h) {
      if (a.D == 32) {
        forward_row16_avx512<32>(a, lane_w, lane_wi, lane_h, lane_hi, lane_start, zeros, bq, h);
      } else {
        forward_row16_avx512<64>(a, lane_w, lane_wi, lane_h, lane_hi, lane_start, zeros, bq, h);
      }
    }
  }
}

const Kernels avx512_kernels{"AVX512", avx512_forward16_f32, avx512_forward_f64, avx512_backward_f32,
                             avx512_backward_f64};
const Kernels avx2_kernels{"AVX2", avx2_forward_f32, avx2_forward_f64, avx2_backward_f32, avx2_backward_f64};
#endif
PIT_DET_KERNELS(baseline, 16, )
const Kernels baseline_kernels{"DEFAULT", baseline_forward_f32, baseline_forward_f64, baseline_backward_f32,
                               baseline_backward_f64};

const Kernels* active = &baseline_kernels;

// The kernels for ``isa`` (torch's names: AVX512, AVX2, DEFAULT), never wider than this CPU runs.
std::string select_isa(const std::string& isa) {
#ifdef PIT_DET_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  if (isa == "AVX512" && avx512) {
    active = &avx512_kernels;
  } else if ((isa == "AVX512" || isa == "AVX2") && avx2) {
    active = &avx2_kernels;
  } else {
    active = &baseline_kernels;
  }
#else
  active = &baseline_kernels;
#endif
  return active->isa;
}

void check_inputs(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts,
                  const at::Tensor& loc, const at::Tensor& attn) {
  TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn_cpu: tensors must be on the CPU");
  TORCH_CHECK(value.dim() == 4 && loc.dim() == 6 && attn.dim() == 5, "ms_deform_attn_cpu: bad ranks");
  TORCH_CHECK(loc.size(5) == 2 && loc.sizes().slice(0, 5) == attn.sizes(), "ms_deform_attn_cpu: loc/attn shapes");
  TORCH_CHECK(shapes.size(0) == loc.size(3) && starts.size(0) == loc.size(3), "ms_deform_attn_cpu: levels");
  TORCH_CHECK(value.size(0) == loc.size(0) && value.size(2) == loc.size(2), "ms_deform_attn_cpu: batch/heads");
  TORCH_CHECK(loc.scalar_type() == value.scalar_type() && attn.scalar_type() == value.scalar_type(),
              "ms_deform_attn_cpu: dtypes differ");
  TORCH_CHECK(value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble,
              "ms_deform_attn_cpu: float32 or float64 tensors");
}

Args make_args(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts, const at::Tensor& loc,
               const at::Tensor& attn) {
  Args a{};
  a.value = value.data_ptr();
  a.loc = loc.data_ptr();
  a.attn = attn.data_ptr();
  a.shapes = shapes.data_ptr<int64_t>();
  a.starts = starts.data_ptr<int64_t>();
  a.B = value.size(0);
  a.S = value.size(1);
  a.H = value.size(2);
  a.D = value.size(3);
  a.Q = loc.size(1);
  a.L = loc.size(3);
  a.P = loc.size(4);
  return a;
}

}  // namespace

at::Tensor ms_deform_attn_forward(const at::Tensor& value_in, const at::Tensor& shapes_in,
                                  const at::Tensor& starts_in, const at::Tensor& loc_in,
                                  const at::Tensor& attn_in) {
  check_inputs(value_in, shapes_in, starts_in, loc_in, attn_in);
  const auto value = value_in.contiguous(), loc = loc_in.contiguous(), attn = attn_in.contiguous();
  const auto shapes = shapes_in.to(at::kLong).contiguous(), starts = starts_in.to(at::kLong).contiguous();
  Args a = make_args(value, shapes, starts, loc, attn);
  auto out = at::empty({a.B, a.Q, a.H * a.D}, value.options());
  a.out = out.data_ptr();
  const RangeFn fn = value.scalar_type() == at::kFloat ? active->forward_f32 : active->forward_f64;
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, a.H * a.L * a.P));
  at::parallel_for(0, a.B * a.Q, grain, [&](int64_t begin, int64_t end) { fn(a, begin, end); });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_backward(const at::Tensor& value_in, const at::Tensor& shapes_in,
                                                const at::Tensor& starts_in, const at::Tensor& loc_in,
                                                const at::Tensor& attn_in, const at::Tensor& grad_out_in) {
  check_inputs(value_in, shapes_in, starts_in, loc_in, attn_in);
  const auto value = value_in.contiguous(), loc = loc_in.contiguous(), attn = attn_in.contiguous();
  const auto grad_out = grad_out_in.contiguous();
  const auto shapes = shapes_in.to(at::kLong).contiguous(), starts = starts_in.to(at::kLong).contiguous();
  Args a = make_args(value, shapes, starts, loc, attn);
  auto grad_value = at::zeros_like(value);
  auto grad_loc = at::zeros_like(loc);
  auto grad_attn = at::zeros_like(attn);
  a.grad_out = grad_out.data_ptr();
  a.out = grad_value.data_ptr();
  a.grad_loc = grad_loc.data_ptr();
  a.grad_attn = grad_attn.data_ptr();
  const RangeFn fn = value.scalar_type() == at::kFloat ? active->backward_f32 : active->backward_f64;
  at::parallel_for(0, a.B * a.H, 1, [&](int64_t begin, int64_t end) { fn(a, begin, end); });
  return {grad_value, grad_loc, grad_attn};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ms_deform_attn_forward, "fused multi-scale deformable attention, CPU forward");
  m.def("backward", &ms_deform_attn_backward, "fused multi-scale deformable attention, CPU backward");
  m.def("select_isa", &select_isa,
        "use the kernels for an ISA (torch's names: AVX512, AVX2, DEFAULT), capped at what this CPU runs; "
        "returns the ISA in use");
  m.def("isa", [] { return std::string(active->isa); }, "the ISA of the kernels in use");
}
