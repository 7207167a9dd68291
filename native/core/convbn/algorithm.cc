// Which kernels and which path a convolution runs: the ISA's kernel table, direct loops, Winograd, a
// GEMM per image or one spanning the batch.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../common/cpu.h"
#include "../common/debug.h"
#include "convbn_internal.h"

namespace xnorm::convbn {

const Kernels& active_kernels() {
  switch (active_isa()) {
#if defined(__x86_64__)
    case Isa::Avx512: return kernels_avx512();
    case Isa::Avx2: return kernels_avx2();
#elif defined(__aarch64__)
    case Isa::Neon: return kernels_neon();
#endif
    default: return kernels_portable();
  }
}

// 1x1, stride 1, no padding: the input planes are the GEMM operand as they are.
bool pointwise(const ConvShape& g) { return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0; }
// One input channel per group (depthwise and its multipliers): K is tiny, so direct loops beat GEMM.
bool direct(const ConvShape& g) { return g.cin_g() == 1; }

// Channels-last convs run their backward passes on the NHWC tensors as they are (conv_grads in
// conv_passes.cc), but for depthwise ones with channel multipliers past nhwc_multiplier's bounds, which
// run on float32 NCHW copies.
bool backward_as_is(const ConvShape& g) {
  return g.layout == Layout::NHWC && (!direct(g) || pointwise(g) || nhwc_depthwise(g) || nhwc_multiplier(g));
}

// Winograd F(2x2, 3x3) needs 2.25x fewer multiplies than the GEMM for 3x3 stride-1 kernels. Its
// transforms cost per channel, so it pays from a few dozen channels on, and its GEMMs run over 2x2
// tiles (batch included), so it needs a few dozen tiles (measured on AVX-512: 512 channels on 7x7 lose
// at batch 1, win from batch 2; fewer on narrower micro-kernels: min_tiles). F(4x4, 3x3) needs 4x fewer, but its transforms cost more per tile (and per weight:
// 36 values per channel pair, which Tune transforms on every call) and it rounds about 10x more
// (DESIGN.md): it runs where it has at least 32 tiles of its own and at most 512 input channels
// (measured on ResNet layers: from 32 tiles on faster, or even in Tune mode (batch 8 512@7, batch 2
// 256@14; raw weights now take winograd_rows there); below, Tune slower (16 tiles: batch 4 512@7 +21 %, batch 1 256@14), 4 tiles 2x slower),
// and with fewer than 128 input channels only from 512 tiles (64@56: batch 1 and 2, 196 and 392 tiles,
// 0.59 -> 0.82 and 1.2 -> 1.6 ms with F(4x4); batch 4, 784 tiles, 2.3 -> 1.7 ms; quiet machine, one run).
// XNORM_CONV_ALGO=gemm|winograd|winograd4 forces a path (GEMM, F(2x2), F(4x4)) where they apply (tests
// use it); XNORM_CONV_ALGO=winograd_rows forces winograd_rows where it applies.
bool winograd_shape(const ConvShape& g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.groups == 1;
}

// F(2x2, 3x3)'s output tiles over the batch.
static int64_t tiles2(const ConvShape& g) { return g.n * ((g.oh + 1) / 2) * ((g.ow + 1) / 2); }

// The fewest F(2x2) tiles for winograd_forward, whose GEMMs put the tiles on the micro-kernel's columns:
// 32, or one panel of them where the micro-kernel is narrower (AVX2's 16 columns: 16 tiles fill a panel,
// and F(2x2) ran prepared 512@7 at batch 1 in 1.55-1.8 ms against 3.5 for the GEMM and 2.4-3.6 with the
// tiles as rows; AMD family 25 without AVX-512, one run).
static int64_t min_tiles() { return std::min<int64_t>(32, active_kernels().nr); }

// XNORM_CONV_ALGO's forced path, or null (unset or empty: the shapes choose).
static const char* forced_algo() {
  const char* algo = std::getenv("XNORM_CONV_ALGO");
  return algo && *algo ? algo : nullptr;
}

int winograd_tile(const ConvShape& g, bool raw_weights) {
  if (!winograd_shape(g)) return 0;
  const char* algo = forced_algo();
  if (algo && std::strcmp(algo, "gemm") == 0) return 0;
  if (algo && std::strcmp(algo, "winograd") == 0) return 2;
  if (algo && std::strcmp(algo, "winograd4") == 0) return 4;
  if (winograd_rows(g, raw_weights)) return 2;
  if (g.c < 32 || g.cout < 32 || tiles2(g) < min_tiles()) return 0;
  const int64_t tiles4 = g.n * ((g.oh + 3) / 4) * ((g.ow + 3) / 4);
  return g.c <= 512 && tiles4 >= 32 && (g.c >= 128 || tiles4 >= 512) ? 4 : 2;
}

// (Prepared or raw weights choose only between the Winograd forms, never whether Winograd runs.)
bool winograd(const ConvShape& g) { return winograd_tile(g, false) != 0; }

// Few tiles of many channels (deep layers at batch 1) run Winograd with the tiles as the GEMM's rows:
// prepared U is packed once, as B panels, and the 16 products run as gemm's pixels-as-rows problems
// (winograd_rows_impl.h), where the tiles would fill a third of winograd_forward's 48-column panels.
// Single-thread CPU time of prepared 512@7 at batch 1: 2.04 -> 1.12 ms (NHWC); with 2 threads rows beat
// or tie F(2x2) and F(4x4) up to 98 tiles NHWC (256@14 at batch 2: 1.0 ms against 1.2-1.3) and 49 NCHW,
// which also pays for a channels-last copy of x and a scattered output (98 tiles: 1.37 against
// 1.20-1.28 ms; see DESIGN.md). Raw weights (Tune's W * s, conv2d's W) take it too: each task makes
// its panel's 16 U slices per K slice in cache (never 16.8 MB of U through memory), with the prepared
// panels' bits. Tune single-thread CPU time against the GEMM / F(2x2) / F(4x4) they took before: 512@7
// batch 1 2.5-2.9 -> 1.9-2.0 ms, batch 2 4.5 -> 2.8-2.9; 256@14 batch 1 1.65 -> 1.0-1.06, batch 2
// NHWC 2.55 -> 1.8 (DESIGN.md). All of that on AVX-512's 48-wide panels: where the micro-kernel is
// narrower, the tiles fill winograd_forward's panels from min_tiles() on, and the rows run only below it
// (AVX2, prepared 512@7 at batch 1 and 2, 16 and 32 tiles: F(2x2) 1.55 and 2.8 ms, the rows 2.4-3.6
// and 4.5-5.3; Tune no slower with F(2x2); 49 tiles equal within the noise).
//
// Raw weights (`raw_weights`: Tune's W * s, an unprepared conv2d's W, backward-data's rotated W) are
// transformed on every call: F(4x4) and F(2x2) write all of U (36 or 16 values per channel pair: 37.7 or
// 16.8 MB on 512 channels) to memory and read it back, while the rows make it in cache a panel at a
// time. So raw weights take the rows up to more tiles. Tune, 2 threads, medians, NCHW / NHWC (Intel
// Xeon with AVX-512, one run): 512@7 batch 8 (128 tiles) F(4x4) 8.1 / 8.0 ms, rows 5.7 / 5.3; batch 4
// (64) F(2x2) 4.7 NCHW, rows 3.0; 256@14 batch 2 (98) F(4x4) 2.0 NCHW, rows 1.5; batch 4 (196) F(4x4)
// 3.0 / 3.1, rows 2.8 / 2.3; 128@28 batch 1 (196) F(4x4) 0.87 / 1.04, rows 1.12 / 0.87; 392 tiles
// (256@14 batch 8, 128@28 batch 2) NHWC even. NCHW rows also pay for a channels-last copy of x and a
// scattered output, so they stop at fewer tiles.
constexpr int64_t kMaxRowTilesNhwc = 100, kMaxRowTilesNchw = 49;
constexpr int64_t kMaxRawRowTilesNhwc = 200, kMaxRawRowTilesNchw = 128;
bool winograd_rows(const ConvShape& g, bool raw_weights) {
  if (!winograd_shape(g)) return false;
  const char* algo = forced_algo();
  if (algo && std::strcmp(algo, "winograd_rows") == 0) return true;
  if (algo) return false;
  const bool nhwc = g.layout == Layout::NHWC;
  const int64_t most = min_tiles() < 32 ? min_tiles() - 1
                       : raw_weights    ? (nhwc ? kMaxRawRowTilesNhwc : kMaxRawRowTilesNchw)
                                        : (nhwc ? kMaxRowTilesNhwc : kMaxRowTilesNchw);
  return g.c >= 128 && g.cout >= 128 && tiles2(g) <= most;
}

// dx of a stride-1 conv is itself a forward conv: of dy, with each filter's taps rotated 180 degrees and
// its input and output channels swapped (per group), padded by d * (k - 1) - p (output h x w), where that
// padding is not negative. In g's layout. Where that conv takes Winograd (3x3, undilated, ungrouped),
// backward-data does too, as F(2x2, 3x3) (F(4x4)'s rounding would be 10x the GEMM's in the gradients),
// instead of a GEMM over the patches and col2im; channels-last, every such conv but those with one
// output channel per group runs as that forward (backward_data_nhwc in conv_passes.cc).
bool data_as_forward(const ConvShape& g, ConvShape& t) {
  if (g.sh != 1 || g.sw != 1 || g.ph > g.dh * (g.kh - 1) || g.pw > g.dw * (g.kw - 1)) return false;
  t = g;
  t.c = g.cout, t.h = g.oh, t.w = g.ow, t.cout = g.c, t.oh = g.h, t.ow = g.w;
  t.ph = g.dh * (g.kh - 1) - g.ph, t.pw = g.dw * (g.kw - 1) - g.pw;
  return true;
}

// Small feature maps are batched: one GEMM spans every image (N = images x pixels), which fills the
// vector tiles and packs each weight panel once instead of once per image. Capped so the batched
// im2col-sized scratch of the backward pass stays moderate.
bool span_images(const ConvShape& g) {
  return g.n > 1 && g.oh * g.ow < 256 && g.c * g.kh * g.kw * g.n * g.oh * g.ow <= (int64_t(1) << 24);
}

// Depthwise with one output channel per input channel: the channels-last direct kernel applies.
bool nhwc_depthwise(const ConvShape& g) { return direct(g) && g.cout == g.c && g.kh * g.kw <= 64; }

// NCHW depthwise, channel multipliers included: several output channels' planes per vector
// (direct_forward_planes) instead of one row per vector (most of it padding on 7x7 maps) with one FMA
// chain per row: faster on every MobileNet map (see DESIGN.md). Up to 64 taps and 2^16 padded pixels,
// so that its per-thread scratch stays a few MiB.
bool direct_planes(const ConvShape& g) {
  return direct(g) && g.kh * g.kw <= 64 && (g.h + 2 * g.ph) * (g.w + 2 * g.pw) <= (int64_t(1) << 16);
}

int64_t multiplier_band_rows(const ConvShape& g) {
  return std::min(g.h, (kMultiplierBand - 1) * g.sh + (g.kh - 1) * g.dh + 1);
}

// Channels-last depthwise with a channel multiplier m whose passes run the multiplier-1 kernels on
// bands of rows expanded to m copies of each channel (forward_nhwc, backward_multiplier_nhwc), in
// per-thread scratch of at most 16 MiB (else NCHW transposes).
bool nhwc_multiplier(const ConvShape& g) {
  return direct(g) && g.cout != g.c && g.kh * g.kw <= 64 && multiplier_band_rows(g) * g.w * g.cout <= (int64_t(1) << 22);
}

// The channels-last forward (forward_nhwc) runs every conv on NHWC x and y as they are, but depthwise
// ones past nhwc_depthwise's and nhwc_multiplier's bounds.
bool nhwc_native(const ConvShape& g) {
  if (g.layout != Layout::NHWC) return false;
  return !direct(g) || nhwc_depthwise(g) || nhwc_multiplier(g);
}

// NCHW maps a few pixels wide gather their GEMM patches faster from a channels-last copy of x (runs of
// channels instead of runs of <= 8 pixels: prepared 512@7 at batch 1, 1.5 -> 1.1 ms). Not depthwise:
// its transposes cost more than the channels-last kernel saves (measured on 7x7 and 14x14 maps).
// Pointwise too where the pixels are few enough to be one block of the GEMM's M: 49 pixels fill 7 rows
// of 8-row tiles where as N they take a 48-column tile and one of a single column, and Tune packs W * s
// per call in cache as B (pw 1024@7 at batch 1, CPU time per call: Deploy 1.2 -> 1.08 ms, Tune 1.5 ->
// 1.43 ms; at batch 8, 392 pixels, the NCHW GEMM stays faster: 6.2 vs 6.8 ms).
bool nchw_via_nhwc(const ConvShape& g) {
  return g.layout == Layout::NCHW && !winograd(g) && !direct(g) && g.ow <= 8 && (!pointwise(g) || g.n * g.oh * g.ow <= 128);
}

// Of those, a 1x1 conv of one image needs no copy: the GEMM packs NCHW x as it is (its pixel rows are
// x's columns); the copy cost pw 1024@7 ~6 % of its CPU time.
bool nchw_x_as_is(const ConvShape& g) { return nchw_via_nhwc(g) && pointwise(g) && g.n == 1; }

// Its A (the patches, packed whole before the GEMM) is kept to 16 MiB; measured equal or faster than
// pixels as N up to that size (5-15 % on 7x7 and 14x14 maps at batch 1).
bool pixels_as_rows(const ConvShape& g) { return g.n * g.oh * g.ow * g.patch() <= (int64_t(1) << 22); }

std::string winograd_name(const ConvShape& g, bool raw_weights) {
  if (winograd_rows(g, raw_weights)) return "Winograd F(2x2, 3x3), tiles as M";
  return winograd_tile(g, raw_weights) == 4 ? "Winograd F(4x4, 3x3)" : "Winograd F(2x2, 3x3)";
}

// The forward path by name, as the XNORM_DEBUG log reports it.
std::string forward_path(const ConvShape& g, bool raw_weights) {
  if (nhwc_native(g)) return direct(g)     ? (g.cout == g.c ? "channels-last direct (depthwise)" : "channels-last direct (depthwise, input rows expanded by the channel multiplier)")
                            : winograd(g)   ? "channels-last " + winograd_name(g, raw_weights)
                            : pixels_as_rows(g) ? "channels-last GEMM, pixels as M" : "channels-last GEMM";
  if (nchw_x_as_is(g)) return "channels-last GEMM, pixels as M, reading NCHW x as it is (1x1, one image)";
  if (nchw_via_nhwc(g)) return "GEMM on a channels-last copy of x (narrow map)";
  const char* via = g.layout == Layout::NHWC ? ", via NCHW transposes" : "";
  if (direct(g)) return std::string(direct_planes(g) ? "direct loops (depthwise, channels in lanes)" : "direct loops (depthwise)") + via;
  if (winograd(g)) return winograd_name(g, raw_weights) + via;
  return std::string(pointwise(g) ? "GEMM (1x1)" : "im2col GEMM") + (span_images(g) ? " spanning the batch" : "") + via;
}

void debug_forward(const ConvShape& g, bool prepared) {
  auto dims = [](std::initializer_list<int64_t> v) {
    std::string s;
    for (int64_t d : v) s += (s.empty() ? "" : "x") + std::to_string(d);
    return s;
  };
  const std::string shape = std::string(g.layout == Layout::NHWC ? "NHWC" : "NCHW") + " x " + dims({g.n, g.c, g.h, g.w}) +
                            ", w " + dims({g.cout, g.cin_g(), g.kh, g.kw}) + ", stride " + dims({g.sh, g.sw}) + ", pad " +
                            dims({g.ph, g.pw}) + ", dilation " + dims({g.dh, g.dw}) + ", groups " + std::to_string(g.groups) +
                            (prepared ? ", prepared weights" : "");
  if (debug_first("conv " + shape))
    debug_log("conv forward " + shape + ": " + forward_path(g, !prepared) + " (micro-kernel " + micro_tile() + ")");
}

std::string micro_tile() {
  const Kernels& k = active_kernels();
  return std::to_string(k.mr) + "x" + std::to_string(k.nr) + " " + isa_name(active_isa());
}

}  // namespace xnorm::convbn
