#include "bnstats.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>

#include "../common/cpu.h"
#include "../common/error.h"
#include "../common/thread_pool.h"
#include "kernels.h"

namespace xnorm::bnstats {
namespace {

// Elements per task: large enough to amortise scheduling, small enough to stay in L2 and balance.
constexpr int64_t kTaskElements = 1 << 16;

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

// merge(a[j], b[j * stride]) into a[j] for j < k, where every a[j] has one count and every b[j] another
// (each plane of a reduction holds S values): the count ratios are worked out once instead of two
// divisions per slot, and each result has the bits merge() gives it.
void merge_uniform(Moments* a, const Moments* b, int64_t stride, int64_t k) {
  if (k == 0 || b[0].count == 0) return;
  if (a[0].count == 0) {
    for (int64_t j = 0; j < k; ++j) a[j] = b[j * stride];
    return;
  }
  const double count = a[0].count + b[0].count;
  const double wb = b[0].count / count, wab = a[0].count * b[0].count / count;
  for (int64_t j = 0; j < k; ++j) {
    const Moments& y = b[j * stride];
    const double delta = y.mean - a[j].mean;
    a[j] = {count, a[j].mean + delta * wb, a[j].m2 + y.m2 + delta * delta * wab};
  }
}

Moments from_sums(const ShiftedSums& s) {
  Moments m;
  m.count = s.count;
  m.mean = s.shift + s.s1 / s.count;
  m.m2 = std::max(0.0, s.s2 - s.s1 * s.s1 / s.count);
  return m;
}

inline const uint8_t* at(const void* p, DType t, int64_t i) {
  return static_cast<const uint8_t*>(p) + i * dtype_bytes(t);
}
inline uint8_t* at(void* p, DType t, int64_t i) { return static_cast<uint8_t*>(p) + i * dtype_bytes(t); }

int64_t slot_of(const Geometry& g, Over over, int64_t groups, int64_t n, int64_t c) {
  switch (over) {
    case Over::Channel: return c;
    case Over::Instance: return n * g.c + c;
    case Over::Group: return n * groups + c / (g.c / groups);
  }
  return c;
}

// Rows of C < 64 channels read `fold` at a time as one row of fold * C (<= 64) values, a whole number of
// 16-float vectors where one fits: C = 3 reads 16 rows as 48 values instead of 3 lanes of a vector per row.
int64_t rows_folded(int64_t c) {
  if (c >= 64) return 1;
  for (int64_t f = 64 / c; f > 1; --f)
    if (f * c % 16 == 0) return f;
  return 64 / c;
}

// Per-(image, channel) moments, the unit every mode is merged from, into planes[n * C + c]. The NHWC
// path (and NCHW with S = 1, which is the same memory order) reads row blocks; NCHW reads each plane as
// contiguous pieces. Scratch is per calling thread and kept: a fresh allocation of this size is
// page-faulted in on every call, which cost more than the merges themselves.
void plane_moments(const void* x, DType t, const Geometry& g, Moments* planes) {
  const Kernels& k = active_kernels();
  bool rows_layout = g.layout == Layout::NHWC || g.s == 1;
  if (!rows_layout) {
    int64_t pieces = (g.s + kTaskElements - 1) / kTaskElements;  // per plane
    int64_t piece_len = (g.s + pieces - 1) / pieces;
    int64_t planes_per_task = std::max<int64_t>(1, kTaskElements / g.s);
    if (pieces == 1) {  // whole planes, written directly
      parallel_for(g.n * g.c, planes_per_task, [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; ++p) planes[p] = from_sums(k.sums_contiguous(at(x, t, p * g.s), t, g.s));
      });
      return;
    }
    thread_local std::vector<Moments> part;
    part.resize(size_t(g.n * g.c * pieces));
    Moments* pm = part.data();
    parallel_for(g.n * g.c * pieces, 1, [&](int64_t b, int64_t e) {
      for (int64_t u = b; u < e; ++u) {
        int64_t plane = u / pieces, off = (u % pieces) * piece_len, len = std::min(piece_len, g.s - off);
        pm[u] = from_sums(k.sums_contiguous(at(x, t, plane * g.s + off), t, len));
      }
    });
    parallel_for(g.n * g.c, std::max<int64_t>(1, 1024 / pieces), [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        Moments m = pm[p * pieces];
        for (int64_t q = 1; q < pieces; ++q) m = merge(m, pm[p * pieces + q]);
        planes[p] = m;
      }
    });
    return;
  }
  // Rows of C values; image n owns rows [n*S, (n+1)*S). Tasks never cross an image boundary. Narrow
  // rows are read `fold` at a time as one wide row of fold * C values (whole vectors, several
  // independent sums per row); an image's last S % fold rows are read one at a time. Every task of an
  // image shifts by the image's first (wide) row, so the tasks' sums add up exactly: each image's
  // columns become moments once, and then its fold column groups and leftover rows merge per channel.
  // Tasks are 4x the NCHW ones: each leaves 2 * width partial sums to add up. Rows wider than 64 are
  // read in runs that fetch the next run ahead, a chain that starts afresh in every task: their tasks
  // are twice as long again (C = 1024, two threads: 76 -> 81 % of the read bandwidth).
  const int64_t fold = g.s >= rows_folded(g.c) ? rows_folded(g.c) : 1, width = fold * g.c;
  const int64_t wide_rows = g.s / fold, rest = g.s - wide_rows * fold;  // per image
  const int64_t rows_per_task = std::max<int64_t>(1, (width > 64 ? 8 : 4) * kTaskElements / width);
  const int64_t tasks_per_image = (wide_rows + rows_per_task - 1) / rows_per_task;
  // Per task: s1[width], s2[width]; per image with leftover rows: s1[C], s2[C] after them.
  const int64_t task_sums = 2 * width, tail_at = g.n * tasks_per_image * task_sums;
  thread_local std::vector<double> scratch;
  scratch.resize(size_t(tail_at + (rest > 0 ? g.n * 2 * g.c : 0)));
  double* sums = scratch.data();
  // An image's sums become moments on the thread that finishes its last task, while the other threads
  // go on reading: done after all the reading, in a pass of its own, that work kept C = 1024 from
  // streaming for tens of microseconds per call.
  auto image_moments = [&](int64_t n) {
    const void* image = at(x, t, n * g.s * g.c);
    double* total = sums + n * tasks_per_image * task_sums;  // task 0 of the image: the others add to it
    for (int64_t j = 1; j < tasks_per_image; ++j) {
      const double* s = total + j * task_sums;
      for (int64_t q = 0; q < task_sums; ++q) total[q] += s[q];
    }
    // Column q of the wide row is channel q % C of its fold group; the groups merge in order.
    Moments* m = planes + n * g.c;
    for (int64_t f = 0, q = 0; f < fold; ++f)
      for (int64_t c = 0; c < g.c; ++c, ++q) {
        Moments part = from_sums({double(wide_rows), float_at(image, t, q), total[q], total[width + q]});
        m[c] = f == 0 ? part : merge(m[c], part);
      }
    if (rest > 0) {
      const double* r = sums + tail_at + n * 2 * g.c;
      const void* tail = at(image, t, wide_rows * width);
      for (int64_t c = 0; c < g.c; ++c)
        m[c] = merge(m[c], from_sums({double(rest), float_at(tail, t, c), r[c], r[g.c + c]}));
    }
  };
  std::vector<std::atomic<int64_t>> tasks_left(size_t(g.n));
  for (auto& left : tasks_left) left.store(tasks_per_image, std::memory_order_relaxed);
  parallel_tasks(g.n * tasks_per_image, [&](int64_t task) {
    const int64_t n = task / tasks_per_image, j = task % tasks_per_image;
    const int64_t r0 = j * rows_per_task, rows = std::min(rows_per_task, wide_rows - r0);
    const void* image = at(x, t, n * g.s * g.c);
    double* s = sums + task * task_sums;
    std::fill(s, s + task_sums, 0.0);
    k.sums_columns(at(image, t, r0 * width), t, rows, width, width, image, s, s + width);
    if (rest > 0 && j == tasks_per_image - 1) {
      double* r = sums + tail_at + n * 2 * g.c;
      const void* tail = at(image, t, wide_rows * width);
      std::fill(r, r + 2 * g.c, 0.0);
      k.sums_columns(tail, t, rest, g.c, g.c, tail, r, r + g.c);
    }
    // acq_rel: the last task of an image sees the sums its other tasks wrote.
    if (tasks_left[size_t(n)].fetch_sub(1, std::memory_order_acq_rel) == 1) image_moments(n);
  });
}

}  // namespace

Geometry geometry(const std::vector<int64_t>& shape, Layout layout) {
  if (shape.size() < 2)
    fail(ErrorCode::Shape, "x: expected rank >= 2 ([N, C, ...] or [N, ..., C]), received rank " +
                               std::to_string(shape.size()));
  Geometry g;
  g.layout = layout;
  g.n = shape[0];
  g.c = layout == Layout::NCHW ? shape[1] : shape.back();
  g.s = 1;
  size_t first = layout == Layout::NCHW ? 2 : 1, last = layout == Layout::NCHW ? shape.size() : shape.size() - 1;
  for (size_t i = first; i < last; ++i) g.s *= shape[i];  // overflow already ruled out by the caller
  return g;
}

Moments merge(const Moments& a, const Moments& b) {
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  Moments r;
  r.count = a.count + b.count;
  double delta = b.mean - a.mean;
  r.mean = a.mean + delta * (b.count / r.count);
  r.m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / r.count);
  return r;
}

int64_t moment_slots(const Geometry& g, Over over, int64_t groups) {
  switch (over) {
    case Over::Channel: return g.c;
    case Over::Instance: return g.n * g.c;
    case Over::Group: return g.n * groups;
  }
  return g.c;
}

static void check_reduction(const Geometry& g, Over over, int64_t groups) {
  if (g.c <= 0) fail(ErrorCode::Shape, "x: channel dimension must be >= 1, received " + std::to_string(g.c));
  if (over == Over::Group && (groups <= 0 || g.c % groups != 0))
    fail(ErrorCode::Argument, "groups: expected a positive divisor of C = " + std::to_string(g.c) + ", received " +
                                  std::to_string(groups));
  int64_t per_slot = over == Over::Channel ? g.n * g.s : over == Over::Instance ? g.s : (g.c / groups) * g.s;
  if (per_slot <= 0) fail(ErrorCode::Shape, "x: the reduction has no elements (N or a spatial dimension is 0)");
}

int64_t moments(const void* x, DType t, const Geometry& g, Over over, int64_t groups, double* mean_out,
                double* m2_out) {
  check_reduction(g, over, groups);
  thread_local std::vector<Moments> scratch;
  scratch.resize(size_t(g.n * g.c));
  const Moments* planes = scratch.data();
  plane_moments(x, t, g, scratch.data());
  // Each slot merges its planes in (n, c) order, whatever the split over threads.
  const int64_t nslots = moment_slots(g, over, groups), cg = over == Over::Group ? g.c / groups : 1;
  const int64_t per_slot = over == Over::Channel ? g.n : cg;
  // Slots go kBatch side by side, plane after plane, sharing the count ratios of each step (merged
  // slot after slot, one merge() at a time, N = 8 and C = 1024 took 75 us).
  constexpr int64_t kBatch = 256;
  parallel_for(nslots, std::max<int64_t>(1, 4096 / per_slot), [&](int64_t b, int64_t e) {
    Moments m[kBatch];
    for (int64_t i0 = b; i0 < e; i0 += kBatch) {
      const int64_t k = std::min(kBatch, e - i0);
      std::fill(m, m + k, Moments{});
      if (over == Over::Channel)
        for (int64_t n = 0; n < g.n; ++n) merge_uniform(m, planes + n * g.c + i0, 1, k);
      else  // instance: plane i; group: planes i * cg ... of image i / groups, which are consecutive
        for (int64_t q = 0; q < cg; ++q) merge_uniform(m, planes + i0 * cg + q, cg, k);
      for (int64_t j = 0; j < k; ++j) mean_out[i0 + j] = m[j].mean, m2_out[i0 + j] = m[j].m2;
    }
  });
  return over == Over::Channel ? g.n * g.s : per_slot * g.s;
}

void apply(const void* x, void* y, DType t, const Geometry& g, bool per_instance, const float* mean,
           const float* mean_lo, const float* scale, const float* beta, bool relu) {
  const Kernels& k = active_kernels();
  if (g.layout == Layout::NCHW && g.s > 1) {
    // Each plane is one contiguous run with scalar coefficients; split long planes into pieces.
    int64_t pieces = (g.s + kTaskElements - 1) / kTaskElements;
    int64_t piece_len = (g.s + pieces - 1) / pieces;
    parallel_for(g.n * g.c * pieces, std::max<int64_t>(1, kTaskElements / std::min(piece_len, g.s)),
                 [&](int64_t b, int64_t e) {
                   for (int64_t u = b; u < e; ++u) {
                     int64_t plane = u / pieces, off = (u % pieces) * piece_len;
                     int64_t len = std::min(piece_len, g.s - off);
                     int64_t slot = per_instance ? plane : plane % g.c;
                     int64_t i = plane * g.s + off;
                     k.apply_contiguous(at(x, t, i), at(y, t, i), t, len, mean[slot], mean_lo[slot], scale[slot],
                                        beta[slot], relu);
                   }
                 });
    return;
  }
  int64_t rows_per_task = std::max<int64_t>(1, kTaskElements / g.c);
  int64_t tasks_per_image = (g.s + rows_per_task - 1) / rows_per_task;
  parallel_tasks(g.n * tasks_per_image, [&](int64_t task) {
    int64_t n = task / tasks_per_image, r0 = (task % tasks_per_image) * rows_per_task;
    int64_t rows = std::min(rows_per_task, g.s - r0);
    int64_t i = (n * g.s + r0) * g.c, off = per_instance ? n * g.c : 0;
    k.apply_columns(at(x, t, i), at(y, t, i), t, rows, g.c, mean + off, mean_lo + off, scale + off, beta + off, relu);
  });
}

int64_t moments_reference(const void* x, DType t, const Geometry& g, Over over, int64_t groups, double* mean_out,
                          double* m2_out) {
  check_reduction(g, over, groups);
  int64_t nslots = moment_slots(g, over, groups);
  std::vector<double> sum(size_t(nslots), 0.0), cnt(size_t(nslots), 0.0);
  auto value = [&](int64_t n, int64_t c, int64_t s) {
    int64_t i = g.layout == Layout::NCHW ? (n * g.c + c) * g.s + s : (n * g.s + s) * g.c + c;
    return double(float_at(x, t, i));
  };
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t s = 0; s < g.s; ++s) {
        int64_t slot = slot_of(g, over, groups, n, c);
        sum[size_t(slot)] += value(n, c, s);
        cnt[size_t(slot)] += 1;
      }
  for (int64_t i = 0; i < nslots; ++i) {
    mean_out[i] = sum[size_t(i)] / cnt[size_t(i)];
    m2_out[i] = 0;
  }
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t s = 0; s < g.s; ++s) {
        int64_t slot = slot_of(g, over, groups, n, c);
        double d = value(n, c, s) - mean_out[slot];
        m2_out[slot] += d * d;
      }
  return int64_t(cnt[0]);
}

}  // namespace xnorm::bnstats
