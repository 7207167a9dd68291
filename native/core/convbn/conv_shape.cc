// Convolution geometry: every size checked, the output extent derived.
#include "convbn.h"

#include <string>

#include "../common/checked.h"
#include "../common/error.h"

namespace xnorm::convbn {

std::vector<int64_t> ConvShape::y_shape() const {
  return layout == Layout::NCHW ? std::vector<int64_t>{n, cout, oh, ow} : std::vector<int64_t>{n, oh, ow, cout};
}

ConvShape conv_shape(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws, const int64_t stride[2],
                     const int64_t padding[2], const int64_t dilation[2], int64_t groups, Layout layout) {
  if (xs.size() != 4)
    fail(ErrorCode::Shape, std::string("x: expected rank 4 (") + (layout == Layout::NCHW ? "[N, C, H, W]" : "[N, H, W, C]") +
                               "), received " + shape_str(xs));
  if (ws.size() != 4) fail(ErrorCode::Shape, "weight: expected rank 4 ([Cout, Cin/groups, kh, kw]), received " + shape_str(ws));
  for (int i = 0; i < 2; ++i) {
    const char* hw = i ? "[1] (width)" : "[0] (height)";
    if (stride[i] < 1) fail(ErrorCode::Argument, std::string("stride") + hw + ": expected an integer >= 1, received " + std::to_string(stride[i]));
    if (dilation[i] < 1) fail(ErrorCode::Argument, std::string("dilation") + hw + ": expected an integer >= 1, received " + std::to_string(dilation[i]));
    if (padding[i] < 0) fail(ErrorCode::Argument, std::string("padding") + hw + ": expected an integer >= 0, received " + std::to_string(padding[i]));
  }
  ConvShape g;
  g.layout = layout;
  g.n = xs[0];
  g.c = layout == Layout::NCHW ? xs[1] : xs[3];
  g.h = layout == Layout::NCHW ? xs[2] : xs[1];
  g.w = layout == Layout::NCHW ? xs[3] : xs[2];
  g.cout = ws[0]; g.kh = ws[2]; g.kw = ws[3];
  g.sh = stride[0]; g.sw = stride[1]; g.ph = padding[0]; g.pw = padding[1]; g.dh = dilation[0]; g.dw = dilation[1];
  if (groups < 1) fail(ErrorCode::Argument, "groups: expected an integer >= 1, received " + std::to_string(groups));
  g.groups = groups;
  if (g.c < 1 || g.h < 1 || g.w < 1) fail(ErrorCode::Shape, "x: expected C, H, W >= 1, received " + shape_str(xs));
  if (g.cout < 1 || g.kh < 1 || g.kw < 1 || ws[1] < 1) fail(ErrorCode::Shape, "weight: expected all dimensions >= 1, received " + shape_str(ws));
  if (g.c % groups != 0)
    fail(ErrorCode::Shape, "x: channel count " + std::to_string(g.c) + " is not divisible by groups = " + std::to_string(groups));
  if (g.cout % groups != 0)
    fail(ErrorCode::Shape, "weight: Cout = " + std::to_string(g.cout) + " is not divisible by groups = " + std::to_string(groups));
  if (ws[1] != g.c / groups)
    fail(ErrorCode::Shape, "weight: expected dimension 1 = Cin/groups = " + std::to_string(g.c / groups) + ", received " +
                               shape_str(ws));
  shape_size(xs, "x");
  shape_size(ws, "weight");
  // Extents below 2^53 and strides/paddings below 2^53 cannot overflow these sums in int64.
  int64_t eh = checked_mul(g.kh - 1, g.dh, "weight (dilated kernel height)") + 1;
  int64_t ew = checked_mul(g.kw - 1, g.dw, "weight (dilated kernel width)") + 1;
  int64_t ph2 = checked_mul(g.ph, 2, "padding[0]") + g.h, pw2 = checked_mul(g.pw, 2, "padding[1]") + g.w;
  if (eh > ph2 || ew > pw2)
    fail(ErrorCode::Shape, "weight: the dilated kernel (" + std::to_string(eh) + "x" + std::to_string(ew) +
                               ") is larger than the padded input (" + std::to_string(ph2) + "x" + std::to_string(pw2) + ")");
  g.oh = (ph2 - eh) / g.sh + 1;
  g.ow = (pw2 - ew) / g.sw + 1;
  // Every buffer the kernels index, including per-image im2col columns and NHWC transposes.
  shape_size({g.n, g.cout, g.oh, g.ow}, "y");
  shape_size({g.c, g.kh, g.kw, g.oh, g.ow}, "im2col columns");
  shape_size({g.cout, g.c / groups, g.kh, g.kw}, "weight");
  return g;
}

}  // namespace xnorm::convbn
