// Fused multi-scale deformable attention for the CPU: bilinear sampling (zero padding, align_corners=False),
// attention weighting and the sum over levels and points in one pass, without materialising sampled values.
// Same contract as mmcv's multi_scale_deformable_attn_pytorch:
//   value (B, S, H, D), spatial_shapes (L, 2) [h, w], level_start_index (L,),
//   sampling_locations (B, Q, H, L, P, 2) [x, y] in [0, 1], attention_weights (B, Q, H, L, P) -> (B, Q, H * D).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

struct Corner {
  int64_t offset;  // element offset of the value vector, -1 when outside the map
  double weight, dx, dy;
};

// The four bilinear corners of (x, y) in pixel coordinates; weights and their derivatives by x and y.
inline void corners(double x, double y, int64_t h, int64_t w, int64_t row_stride, Corner out[4]) {
  const double xf = std::floor(x), yf = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(xf), y0 = static_cast<int64_t>(yf);
  const double lx = x - xf, ly = y - yf, hx = 1.0 - lx, hy = 1.0 - ly;
  const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
  const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
  const double ws[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
  const double dxs[4] = {-hy, hy, -ly, ly};
  const double dys[4] = {-hx, -lx, hx, lx};
  for (int c = 0; c < 4; ++c) {
    const bool inside = xs[c] >= 0 && xs[c] < w && ys[c] >= 0 && ys[c] < h;
    out[c] = {inside ? (ys[c] * w + xs[c]) * row_stride : -1, ws[c], dxs[c], dys[c]};
  }
}

// Pixel coordinates of sample i (align_corners=False: x = loc_x * w - 0.5); false when no corner is inside the map.
template <typename scalar_t>
inline bool pixel_coords(const scalar_t* loc, int64_t i, int64_t h, int64_t w, double& x, double& y) {
  x = static_cast<double>(loc[2 * i]) * w - 0.5;
  y = static_cast<double>(loc[2 * i + 1]) * h - 0.5;
  return x > -1.0 && y > -1.0 && x < w && y < h;
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
}

}  // namespace

at::Tensor ms_deform_attn_forward(const at::Tensor& value_in, const at::Tensor& shapes_in,
                                  const at::Tensor& starts_in, const at::Tensor& loc_in,
                                  const at::Tensor& attn_in) {
  check_inputs(value_in, shapes_in, starts_in, loc_in, attn_in);
  const auto value = value_in.contiguous(), loc = loc_in.contiguous(), attn = attn_in.contiguous();
  const auto shapes = shapes_in.to(at::kLong).contiguous(), starts = starts_in.to(at::kLong).contiguous();
  const int64_t B = value.size(0), S = value.size(1), H = value.size(2), D = value.size(3);
  const int64_t Q = loc.size(1), L = loc.size(3), P = loc.size(4);
  auto out = at::zeros({B, Q, H * D}, value.options());
  const int64_t* sh = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* lp = loc.data_ptr<scalar_t>();
    const scalar_t* ap = attn.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, H * L * P));
    at::parallel_for(0, B * Q, grain, [&](int64_t begin, int64_t end) {
      Corner cs[4];
      for (int64_t bq = begin; bq < end; ++bq) {
        const int64_t b = bq / Q;
        for (int64_t h = 0; h < H; ++h) {
          scalar_t* acc = op + (bq * H + h) * D;
          const scalar_t* base = v + (b * S * H + h) * D;
          for (int64_t l = 0; l < L; ++l) {
            const int64_t hl = sh[2 * l], wl = sh[2 * l + 1];
            const scalar_t* level = base + st[l] * H * D;
            for (int64_t p = 0; p < P; ++p) {
              const int64_t i = ((bq * H + h) * L + l) * P + p;
              double x, y;
              if (!pixel_coords(lp, i, hl, wl, x, y)) continue;
              corners(x, y, hl, wl, H * D, cs);
              const scalar_t a = ap[i];
              for (int c = 0; c < 4; ++c) {
                if (cs[c].offset < 0) continue;
                const scalar_t wgt = a * static_cast<scalar_t>(cs[c].weight);
                const scalar_t* src = level + cs[c].offset;
                for (int64_t d = 0; d < D; ++d) acc[d] += wgt * src[d];
              }
            }
          }
        }
      }
    });
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_backward(const at::Tensor& value_in, const at::Tensor& shapes_in,
                                                const at::Tensor& starts_in, const at::Tensor& loc_in,
                                                const at::Tensor& attn_in, const at::Tensor& grad_out_in) {
  check_inputs(value_in, shapes_in, starts_in, loc_in, attn_in);
  const auto value = value_in.contiguous(), loc = loc_in.contiguous(), attn = attn_in.contiguous();
  const auto grad_out = grad_out_in.contiguous();
  const auto shapes = shapes_in.to(at::kLong).contiguous(), starts = starts_in.to(at::kLong).contiguous();
  const int64_t B = value.size(0), S = value.size(1), H = value.size(2), D = value.size(3);
  const int64_t Q = loc.size(1), L = loc.size(3), P = loc.size(4);
  auto grad_value = at::zeros_like(value);
  auto grad_loc = at::zeros_like(loc);
  auto grad_attn = at::zeros_like(attn);
  const int64_t* sh = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* lp = loc.data_ptr<scalar_t>();
    const scalar_t* ap = attn.data_ptr<scalar_t>();
    const scalar_t* go = grad_out.data_ptr<scalar_t>();
    scalar_t* gv = grad_value.data_ptr<scalar_t>();
    scalar_t* gl = grad_loc.data_ptr<scalar_t>();
    scalar_t* ga = grad_attn.data_ptr<scalar_t>();
    // One task per (batch, head): it alone writes grad_value[b, :, h, :], so no atomics are needed.
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      Corner cs[4];
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t bq = b * Q + q;
          const scalar_t* g = go + (bq * H + h) * D;
          for (int64_t l = 0; l < L; ++l) {
            const int64_t hl = sh[2 * l], wl = sh[2 * l + 1];
            const int64_t level_off = (b * S * H + h) * D + st[l] * H * D;
            for (int64_t p = 0; p < P; ++p) {
              const int64_t i = ((bq * H + h) * L + l) * P + p;
              double x, y;
              if (!pixel_coords(lp, i, hl, wl, x, y)) continue;
              corners(x, y, hl, wl, H * D, cs);
              const scalar_t a = ap[i];
              scalar_t g_attn = 0, g_x = 0, g_y = 0;
              for (int c = 0; c < 4; ++c) {
                if (cs[c].offset < 0) continue;
                const scalar_t* src = v + level_off + cs[c].offset;
                scalar_t* dst = gv + level_off + cs[c].offset;
                const scalar_t wgt = a * static_cast<scalar_t>(cs[c].weight);
                scalar_t dot = 0;
                for (int64_t d = 0; d < D; ++d) {
                  dot += g[d] * src[d];
                  dst[d] += wgt * g[d];
                }
                g_attn += static_cast<scalar_t>(cs[c].weight) * dot;
                g_x += static_cast<scalar_t>(cs[c].dx) * dot;
                g_y += static_cast<scalar_t>(cs[c].dy) * dot;
              }
              ga[i] = g_attn;
              gl[2 * i] = a * g_x * static_cast<scalar_t>(wl);
              gl[2 * i + 1] = a * g_y * static_cast<scalar_t>(hl);
            }
          }
        }
      }
    });
  });
  return {grad_value, grad_loc, grad_attn};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ms_deform_attn_forward, "fused multi-scale deformable attention, CPU forward");
  m.def("backward", &ms_deform_attn_backward, "fused multi-scale deformable attention, CPU backward");
}
