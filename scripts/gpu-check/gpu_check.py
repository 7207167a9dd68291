#!/usr/bin/env python3
"""GPU check for the xnorm_cuda plugin, for a machine with an NVIDIA GPU, Python and PyTorch but no Node.

Run through scripts/gpu-check.sh, which builds the plugin and the CPU core library first. Steps:
  1. probe: ABI version, devices (a machine without a usable GPU stops here, exit status 3);
  2. correctness: every CUDA op through the plugin's C ABI against the CPU core kernels (the code the addon
     runs on the CPU) on random awkward shapes, both layouts, every float dtype, misaligned inputs, in-place
     BN, determinism, out-of-memory recovery; binary convolution with every kernel the device has (CUDA cores,
     and the 1-bit tensor-core MMA on sm_75+), MST plans level by level (and their timed trial against the dense
     weights), and packBits / unpackBits, bit for bit; Conv + BN (conv2d, Tune and
     Eval forward and backward, every float dtype, groups, stride, padding, dilation) within the TF32 / FP16 / BF16
     tolerances, and the fold bit for bit;
  3. benchmarks against PyTorch on the same GPU: torch.var_mean, BN forward (eval and training), with the
     achieved bandwidth against the device's copy bandwidth; binary convolution (both kernels) against fp16 conv2d;
     MST plans against the dense weights on the 256 -> 256 layer at 14 x 14 for a few bit-flip rates;
     Conv + BN Tune forward + backward against cuDNN conv2d + eval-mode BN (+ ReLU) with autograd, on the
     ResNet-18 3x3 layers.
Correctness needs numpy; the benchmarks need PyTorch with CUDA.
Exit status 0 when every check passed, 1 when one failed, 3 when no GPU, 4 when numpy or PyTorch is missing.
"""
import argparse
import ctypes as C
import math
import random
import sys
import time
import zlib

ABI_VERSION = 4
OK, UNAVAILABLE, OOM, ARGUMENT = 0, 1, 2, 3
NCHW, NHWC = 0, 1
OVER = {"channel": 0, "instance": 1, "group": 2}
DTYPES = {"float32": 0, "float16": 1, "bfloat16": 2}
ALGORITHMS = {"simt": 1, "mma": 2}  # binary_conv2d kernels: CUDA cores, 1-bit tensor cores (sm_75+)


class Status(C.Structure):
    _fields_ = [("code", C.c_int32), ("message", C.c_char * 512)]


class DeviceInfo(C.Structure):
    _fields_ = [("name", C.c_char * 256), ("major", C.c_int32), ("minor", C.c_int32),
                ("memory_bytes", C.c_uint64), ("multiprocessors", C.c_int32), ("reserved", C.c_int32)]


class Geometry(C.Structure):
    _fields_ = [("n", C.c_int64), ("c", C.c_int64), ("s", C.c_int64), ("layout", C.c_int32), ("reserved", C.c_int32)]


class BConv(C.Structure):
    _fields_ = [(f, C.c_int64) for f in ("n", "h", "w", "c", "cout", "cin_g", "kh", "kw", "groups",
                                          "sh", "sw", "ph", "pw", "dh", "dw")] + [
        ("pad_zero", C.c_int32), ("output", C.c_int32), ("clamp", C.c_int32), ("lo", C.c_float), ("hi", C.c_float),
        ("algorithm", C.c_int32)]


class MstEdge(C.Structure):
    _fields_ = [("child", C.c_int32), ("parent", C.c_int32), ("nwords", C.c_int32), ("d", C.c_int32),
                ("triples", C.c_int64)]


class Mst(C.Structure):
    _fields_ = [("edge_words", C.c_void_p), ("edge_words_len", C.c_int64), ("roots", C.POINTER(C.c_int32)),
                ("nroots", C.c_int64), ("edges", C.POINTER(MstEdge)), ("nedges", C.c_int64),
                ("level_ends", C.POINTER(C.c_int64)), ("nlevels", C.c_int32), ("trial", C.c_int32),
                ("plan_ms", C.c_float), ("dense_ms", C.c_float)]


class ConvGeo(C.Structure):
    _fields_ = [(f, C.c_int64) for f in ("n", "c", "h", "w", "cout", "kh", "kw", "groups", "sh", "sw", "ph", "pw",
                                          "dh", "dw")] + [
        ("layout", C.c_int32), ("dtype", C.c_int32), ("w_dtype", C.c_int32), ("relu", C.c_int32)]


class Bn(C.Structure):
    _fields_ = [("mean", C.POINTER(C.c_float)), ("var", C.POINTER(C.c_float)), ("gamma", C.POINTER(C.c_float)),
                ("beta", C.POINTER(C.c_float)), ("eps", C.c_double)]


class ConvGrads(C.Structure):
    _fields_ = [("dx", C.c_void_p), ("dw", C.c_void_p), ("dbias", C.c_void_p), ("dgamma", C.c_void_p),
                ("dbeta", C.c_void_p)]


CONV_PLAIN, CONV_TUNE, CONV_EVAL = 0, 1, 2
# Conv + BN against the CPU: |got - want| <= tol * (|want| + rms(want)) (TF32 / FP16 / BF16 products, float32 sums).
CONV_TOL = {"float32": 5e-3, "float16": 5e-3, "bfloat16": 3e-2}

S = C.POINTER(Status)
F = C.CFUNCTYPE
i32, i64, u64, vp = C.c_int32, C.c_int64, C.c_uint64, C.c_void_p
dp, fp = C.POINTER(C.c_double), C.POINTER(C.c_float)


class Api(C.Structure):
    _fields_ = [
        ("abi_version", C.c_uint32), ("struct_size", C.c_uint32),
        ("device_count", F(i32, C.POINTER(i32), S)),
        ("device_info", F(i32, i32, C.POINTER(DeviceInfo), S)),
        ("alloc", F(i32, i32, u64, C.POINTER(vp), S)),
        ("free", F(i32, i32, vp, S)),
        ("upload", F(i32, i32, vp, vp, u64, S)),
        ("download", F(i32, i32, vp, vp, u64, S)),
        ("fill_zero", F(i32, i32, vp, u64, S)),
        ("synchronize", F(i32, i32, S)),
        ("moments", F(i32, i32, vp, i32, C.POINTER(Geometry), i32, i64, dp, dp, fp, fp, C.POINTER(i64), S)),
        ("batch_norm", F(i32, i32, vp, vp, i32, C.POINTER(Geometry), i32, fp, fp, fp, fp, i32, S)),
        ("binary_conv2d", F(i32, i32, vp, vp, C.POINTER(BConv), fp, fp, vp, S)),
        ("binary_conv2d_mst", F(i32, i32, vp, vp, C.POINTER(BConv), C.POINTER(Mst), fp, fp, vp, S)),
        ("pack_bits", F(i32, i32, vp, i32, C.POINTER(Geometry), fp, C.c_float, vp, S)),
        ("unpack_bits", F(i32, i32, vp, C.POINTER(Geometry), vp, S)),
        ("conv_fold", F(i32, i32, i64, i64, vp, i32, fp, C.POINTER(Bn), vp, vp, vp, S)),
        ("conv_forward", F(i32, i32, C.POINTER(ConvGeo), i32, vp, vp, fp, C.POINTER(Bn), vp, vp, vp, vp, S)),
        ("conv_backward", F(i32, i32, C.POINTER(ConvGeo), i32, vp, vp, fp, C.POINTER(Bn), vp, vp, vp, vp, vp,
                            C.POINTER(ConvGrads), S)),
    ]


class Failure(Exception):
    pass


class Plugin:
    def __init__(self, path, device=0):
        self.lib = C.CDLL(path)
        self.lib.xnorm_cuda_abi_version.restype = C.c_uint32
        self.lib.xnorm_cuda_get_api.restype = C.POINTER(Api)
        v = self.lib.xnorm_cuda_abi_version()
        if v != ABI_VERSION:
            raise Failure(f"plugin ABI version {v}, this check expects {ABI_VERSION}")
        self.api = self.lib.xnorm_cuda_get_api().contents
        if self.api.struct_size < C.sizeof(Api):
            raise Failure(f"plugin function table has {self.api.struct_size} bytes, expected {C.sizeof(Api)}")
        self.device = device

    def call(self, name, *args, expect=OK):
        st = Status()
        rc = getattr(self.api, name)(*args, C.byref(st))
        if rc != expect:
            raise Failure(f"{name}: returned {rc} (expected {expect}): {st.message.decode(errors='replace')}")
        return st

    def alloc(self, nbytes):
        p = vp()
        self.call("alloc", self.device, nbytes, C.byref(p))
        return p.value or 0

    def free(self, p):
        self.call("free", self.device, vp(p))


def torch_dtype(torch, name):
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def geometry(shape, layout):
    n = shape[0]
    if layout == NCHW:
        c, s = shape[1], math.prod(shape[2:])
    else:
        c, s = shape[-1], math.prod(shape[1:-1])
    return Geometry(n, c, s, layout, 0)


def seed_of(*key):
    return zlib.crc32(repr(key).encode())


def encode(np, values, dtype):
    """float32 values -> storage array of `dtype` (bfloat16 as uint16 bits, rounded to nearest even)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "float32":
        return values
    if dtype == "float16":
        return values.astype(np.float16)
    u = values.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def decode(np, storage, dtype):
    if dtype == "bfloat16":
        return (storage.astype(np.uint32) << 16).view(np.float32)
    return storage.astype(np.float32)


def ptr(a, ctype=None):
    p = vp(a.ctypes.data)
    return C.cast(p, C.POINTER(ctype)) if ctype else p


class Checker:
    """Runs each op through the plugin and through the CPU core on the same data (numpy arrays)."""

    def __init__(self, np, plugin, core, cc):
        self.np, self.p, self.core = np, plugin, core
        # Every binary_conv2d kernel the device has: the tensor-core one from sm_75 on.
        self.algorithms = [a for a in ALGORITHMS if a != "mma" or cc >= 75]
        core.core_moments.restype = C.c_int64
        core.core_moments.argtypes = [vp, i32, i64, i64, i64, i32, i32, i64, dp, dp, i32]
        core.core_batch_norm.restype = C.c_int32
        core.core_batch_norm.argtypes = [vp, vp, i32, i64, i64, i64, i32, i32, fp, fp, fp, fp, i32]
        geo = C.POINTER(C.c_int64)
        core.core_conv_forward.restype = C.c_int32
        core.core_conv_forward.argtypes = [geo, i32, i32, i32, vp, fp, fp, fp, fp, fp, fp, C.c_double, i32, vp]
        core.core_conv_backward.restype = C.c_int32
        core.core_conv_backward.argtypes = [geo, i32, i32, i32, vp, fp, fp, fp, fp, fp, fp, C.c_double, i32, vp, vp,
                                            fp, fp, fp, fp]
        core.core_conv_fold.restype = C.c_int32
        core.core_conv_fold.argtypes = [i64, i64, fp, fp, fp, fp, fp, fp, C.c_double, fp, fp]
        self.failures = 0
        self.checks = 0
        self.emulated = False  # the CPU emulation of the plugin: smaller conv cases

    def fail(self, what):
        self.failures += 1
        print(f"  FAIL {what}")

    def upload(self, a, misalign=0):
        """A device copy of array a, optionally starting `misalign` elements into the allocation so the
        kernels see an address that is not 16-byte aligned. Returns (allocation, data pointer)."""
        off = misalign * a.itemsize
        base = self.p.alloc(a.nbytes + off + 16)
        self.p.call("upload", self.p.device, vp(base + off), ptr(a), a.nbytes)
        return base, base + off

    def download(self, p, like):
        out = self.np.empty_like(like)
        self.p.call("download", self.p.device, ptr(out), vp(p), out.nbytes)
        return out

    def moments_case(self, shape, layout, dtype, over, groups, misalign, offset):
        np = self.np
        rng = np.random.default_rng(seed_of(shape, layout, dtype, over, misalign, offset))
        x = encode(np, rng.standard_normal(math.prod(shape), dtype=np.float32) * 3 + np.float32(offset), dtype)
        geo = geometry(shape, layout)
        slots = geo.c if over == "channel" else geo.n * geo.c if over == "instance" else geo.n * groups
        dt, ov = DTYPES[dtype], OVER[over]
        want_m, want_q = np.zeros(slots), np.zeros(slots)
        count = self.core.core_moments(ptr(x), dt, geo.n, geo.c, geo.s, layout, ov, groups, ptr(want_m, C.c_double),
                                       ptr(want_q, C.c_double), 0)
        base, xp = self.upload(x, misalign)
        m32 = self.p.alloc(slots * 4)
        q32 = self.p.alloc(slots * 4)
        runs = []
        for _ in range(2):
            gm, gq, cnt = np.zeros(slots), np.zeros(slots), C.c_int64()
            self.p.call("moments", self.p.device, vp(xp), dt, C.byref(geo), ov, groups, ptr(gm, C.c_double),
                        ptr(gq, C.c_double), C.cast(vp(m32), fp), C.cast(vp(q32), fp), C.byref(cnt))
            runs.append((gm, gq, cnt.value))
        f32 = self.download(m32, np.zeros(slots, dtype=np.float32))
        for a in (base, m32, q32):
            self.p.free(a)
        what = (f"moments {dtype} {'nchw' if layout == NCHW else 'nhwc'} {list(shape)} {over} groups={groups} "
                f"misalign={misalign} offset={offset}")
        self.checks += 1
        (gm, gq, gc), (gm2, gq2, _) = runs
        if gc != count:
            return self.fail(f"{what}: count {gc} vs {count}")
        if not (np.array_equal(gm, gm2) and np.array_equal(gq, gq2)):
            return self.fail(f"{what}: two runs differ (not deterministic)")
        bad = np.abs(gm - want_m) > 2e-6 * np.maximum(1.0, np.abs(want_m))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return self.fail(f"{what}: mean[{i}] {gm[i]!r} vs {want_m[i]!r}")
        qscale = max(float(np.abs(want_q).max()), 1.0)
        bad = np.abs(gq - want_q) > 2e-5 * qscale
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return self.fail(f"{what}: m2[{i}] {gq[i]!r} vs {want_q[i]!r}")
        if not np.array_equal(f32, gm.astype(np.float32)):
            return self.fail(f"{what}: the float32 means are not the double means rounded")

    def batch_norm_case(self, shape, layout, dtype, per_instance, relu, misalign, in_place):
        np = self.np
        rng = np.random.default_rng(seed_of(shape, layout, dtype, per_instance, relu))
        x = encode(np, rng.standard_normal(math.prod(shape), dtype=np.float32) * 2 + 1, dtype)
        geo = geometry(shape, layout)
        slots = geo.n * geo.c if per_instance else geo.c
        mean64 = rng.standard_normal(slots) + 1
        mean = mean64.astype(np.float32)
        mean_lo = (mean64 - mean.astype(np.float64)).astype(np.float32)
        scale = (rng.random(slots) + 0.5).astype(np.float32)
        beta = rng.standard_normal(slots).astype(np.float32)
        coeffs = [ptr(a, C.c_float) for a in (mean, mean_lo, scale, beta)]
        want = np.zeros_like(x)
        if self.core.core_batch_norm(ptr(x), ptr(want), DTYPES[dtype], geo.n, geo.c, geo.s, layout, int(per_instance),
                                     *coeffs, int(relu)) != 0:
            raise Failure("core_batch_norm failed")
        base, xp = self.upload(x, misalign)
        ybase, yp = (base, xp) if in_place else self.upload(np.zeros_like(x), misalign)
        self.p.call("batch_norm", self.p.device, vp(xp), vp(yp), DTYPES[dtype], C.byref(geo), int(per_instance),
                    *coeffs, int(relu))
        got = self.download(yp, x)
        self.p.free(base)
        if not in_place:
            self.p.free(ybase)
        what = (f"batch_norm {dtype} {'nchw' if layout == NCHW else 'nhwc'} {list(shape)} perInstance={per_instance} "
                f"relu={relu} misalign={misalign} inPlace={in_place}")
        self.checks += 1
        a, b = decode(np, got, dtype), decode(np, want, dtype)
        # float32 within rounding (FMA or not); 16-bit outputs within one unit in the last place.
        ulp = {"float32": 2e-6, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[dtype]
        bad = np.abs(a - b) > ulp * np.maximum(np.abs(b), 1e-3) + 1e-6
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.fail(f"{what}: y[{i}] {float(a[i])!r} vs {float(b[i])!r}")

    def binary_conv_case(self, rng, case):
        """binary_conv2d, with each kernel, against a direct numpy evaluation of docs/DESIGN.md's rules over ±1
        values (the conventions of the CPU core's binary kernels)."""
        np = self.np
        n, h, w, c, cout, g, kh, kw, s, pd, dl, pad_zero, kind, clamp = case
        cin_g = c // g
        xb = rng.integers(0, 2, size=(n, h, w, c), dtype=np.uint8)
        wb = rng.integers(0, 2, size=(cout, kh, kw, cin_g), dtype=np.uint8)
        scale = None if rng.random() < 0.3 else (rng.standard_normal(cout) * 0.1).astype(np.float32)
        bias = None if rng.random() < 0.3 else rng.standard_normal(cout).astype(np.float32)
        lo, hi = (np.float32(-2.5), np.float32(3.0)) if clamp else (np.float32(0), np.float32(0))
        want = bconv_oracle(np, xb, wb, g, s, pd, dl, pad_zero, kind, clamp, scale, bias, lo, hi)
        xw = pack_bits(np, xb)
        ww = pack_bits(np, wb)
        out = np.zeros_like(want)
        xbase, xp_ = self.upload(xw)
        wbase, wp_ = self.upload(ww)
        obase, op_ = self.upload(out)
        for alg in self.algorithms:
            self.p.call("upload", self.p.device, vp(op_), ptr(np.full(out.nbytes, 0xA5, np.uint8)), out.nbytes)
            prm = BConv(n, h, w, c, cout, cin_g, kh, kw, g, s, s, pd, pd, dl, dl, int(pad_zero), kind, int(clamp), lo, hi,
                        ALGORITHMS[alg])
            self.p.call("binary_conv2d", self.p.device, vp(xp_), vp(wp_), C.byref(prm),
                        ptr(scale, C.c_float) if scale is not None else None,
                        ptr(bias, C.c_float) if bias is not None else None, vp(op_))
            got = self.download(op_, out)
            self.checks += 1
            same = np.array_equal(got.view(np.uint32), want.view(np.uint32)) if kind == 0 else np.array_equal(got, want)
            if not same:
                i = int(np.flatnonzero(got.reshape(-1) != want.reshape(-1))[0]) if got.shape == want.shape else 0
                self.fail(f"binary_conv2d ({alg}) {case}: element {i}: {got.reshape(-1)[i]!r} vs {want.reshape(-1)[i]!r}")
        for a in (xbase, wbase, obase):
            self.p.free(a)

    def mst_case(self, rng, case):
        """binary_conv2d_mst (plain and timed trial) on prototype weights with flipped bits: bit for bit against
        the numpy oracle of the CPU conventions and against the dense kernels; a plan whose edge reads a
        parent of its own level is refused."""
        np = self.np
        n, h, w, c, cout, g, k, s, pd, dl, pad_zero, kind, clamp, max_depth = case
        cin_g = c // g
        xb = rng.integers(0, 2, size=(n, h, w, c), dtype=np.uint8)
        wb = prototype_weights(np, rng, cout, g, k, k, cin_g, flip=0.06)
        scale = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        bias = rng.standard_normal(cout).astype(np.float32)
        lo, hi = (np.float32(-2.5), np.float32(3.0)) if clamp else (np.float32(0), np.float32(0))
        want = bconv_oracle(np, xb, wb, g, s, pd, dl, pad_zero, kind, clamp, scale, bias, lo, hi)
        records, roots, edges, level_ends, depth, _ = mst_plan(np, wb, g, max_depth)
        if not edges:
            self.fail(f"binary_conv2d_mst {case}: the test plan has no edges")
        xbase, xp_ = self.upload(pack_bits(np, xb))
        wbase, wp_ = self.upload(pack_bits(np, wb))
        ebase, ep_ = self.upload(records)
        obase, op_ = self.upload(np.zeros_like(want))
        prm = BConv(n, h, w, c, cout, cin_g, k, k, g, s, s, pd, pd, dl, dl, int(pad_zero), kind, int(clamp), lo, hi, 0)
        sc, bi = ptr(scale, C.c_float), ptr(bias, C.c_float)
        for trial in (0, 1):
            self.p.call("upload", self.p.device, vp(op_), ptr(np.full(want.nbytes, 0xA5, np.uint8)), want.nbytes)
            m = mst_struct(np, ep_, records.size, roots, edges, level_ends, trial)
            self.p.call("binary_conv2d_mst", self.p.device, vp(xp_), vp(wp_), C.byref(prm), C.byref(m), sc, bi, vp(op_))
            got = self.download(op_, want)
            self.checks += 1
            same = np.array_equal(got.view(np.uint32), want.view(np.uint32))
            if not same:
                i = int(np.flatnonzero(got.reshape(-1) != want.reshape(-1))[0])
                self.fail(f"binary_conv2d_mst (trial {trial}) {case}: element {i}: {got.reshape(-1)[i]!r} vs {want.reshape(-1)[i]!r}")
            if trial and not (m.plan_ms > 0 and m.dense_ms > 0):
                self.fail(f"binary_conv2d_mst trial {case}: times {m.plan_ms}, {m.dense_ms}")
        if len(level_ends) > 1:  # all edges in one level: the second level's parents are not ready
            m = mst_struct(np, ep_, records.size, roots, edges, [len(edges)], 0)
            self.checks += 1
            self.p.call("binary_conv2d_mst", self.p.device, vp(xp_), vp(wp_), C.byref(prm), C.byref(m), sc, bi, vp(op_),
                        expect=ARGUMENT)
        for a in (xbase, wbase, ebase, obase):
            self.p.free(a)

    def bits_case(self, shape, layout, dtype, per_channel, misalign):
        """pack_bits (bit = float(x) < threshold, the CPU core's rule) and unpack_bits back to ±1, against
        numpy, bit for bit; zeros and exact ties with the threshold included."""
        np = self.np
        rng = np.random.default_rng(seed_of(shape, layout, dtype, per_channel, misalign))
        geo = geometry(shape, layout)
        v = rng.standard_normal(math.prod(shape), dtype=np.float32)
        v[::7] = 0  # sign(0) = +1, and a tie with the zero thresholds below
        v[::11] = 0.25  # a tie with the scalar threshold
        x = encode(np, v, dtype)
        xf = decode(np, x, dtype)
        thr = None
        if per_channel:
            thr = (rng.standard_normal(geo.c) * 0.5).astype(np.float32)
            thr[::3] = 0
        t = thr if per_channel else np.full(geo.c, 0.25, np.float32)
        # [n, s, c] view whatever the layout, to compare along channels.
        xc = xf.reshape(geo.n, geo.c, geo.s).transpose(0, 2, 1) if layout == NCHW else xf.reshape(geo.n, geo.s, geo.c)
        bits = (xc < t).astype(np.uint8)
        want = pack_bits(np, bits).reshape(-1)
        xbase, xp_ = self.upload(x, misalign)
        obase, op_ = self.upload(np.zeros_like(want))
        self.p.call("pack_bits", self.p.device, vp(xp_), DTYPES[dtype], C.byref(geo),
                    ptr(thr, C.c_float) if per_channel else None, C.c_float(0.25), vp(op_))
        got = self.download(op_, want)
        self.checks += 1
        what = f"pack_bits {dtype} {'NCHW' if layout == NCHW else 'NHWC'} {shape} per_channel={per_channel}"
        if not np.array_equal(got, want):
            i = int(np.flatnonzero(got != want)[0])
            self.fail(f"{what}: word {i}: {int(got[i]):#x} vs {int(want[i]):#x}")
        # unpack_bits into the same layout as x.
        back = 1 - 2 * bits.astype(np.float32)
        want_u = np.ascontiguousarray(back.transpose(0, 2, 1)).reshape(-1) if layout == NCHW else back.reshape(-1)
        ubase, up_ = self.upload(np.zeros_like(want_u))
        self.p.call("unpack_bits", self.p.device, vp(op_), C.byref(geo), vp(up_))
        got_u = self.download(up_, want_u)
        for a in (xbase, obase, ubase):
            self.p.free(a)
        self.checks += 1
        if not np.array_equal(got_u, want_u):
            i = int(np.flatnonzero(got_u != want_u)[0])
            self.fail(f"unpack_bits {what[10:]}: element {i}: {got_u[i]!r} vs {want_u[i]!r}")

    def conv_close(self, what, got, want, tol):
        """Counts one check: |got - want| <= tol * (|want| + rms(want))."""
        np = self.np
        self.checks += 1
        rms = float(np.sqrt(np.mean(np.square(want.astype(np.float64))))) if want.size else 0.0
        err = np.abs(got.astype(np.float64) - want) - tol * (np.abs(want) + rms)
        if (err > 0).any():
            i = int(np.argmax(err))
            self.fail(f"{what}: [{i}] {float(got.reshape(-1)[i])!r} vs {float(want.reshape(-1)[i])!r} (tol {tol} x (|want| + {rms:.3g}))")

    def conv_case(self, case, dtype, mode):
        """conv_forward and (Tune, Eval) conv_backward against the CPU core on the same data; ReLU on."""
        np = self.np
        n, c, h, w, cout, kh, kw, g, s, pd, dl, layout = case
        rng = np.random.default_rng(seed_of(case, dtype, mode))
        cin_g = c // g
        oh = (h + 2 * pd - dl * (kh - 1) - 1) // s + 1
        ow = (w + 2 * pd - dl * (kw - 1) - 1) // s + 1
        x = encode(np, rng.standard_normal(n * c * h * w, dtype=np.float32) + 0.2, dtype)
        wt = (rng.standard_normal(cout * cin_g * kh * kw) * 0.5).astype(np.float32)
        bias, mean, gamma, beta = ((rng.standard_normal(cout) * 0.5).astype(np.float32) for _ in range(4))
        gamma += 1
        var = (rng.standard_normal(cout) ** 2 + 0.2).astype(np.float32)
        eps = 1e-3
        geo = (C.c_int64 * 14)(n, c, h, w, cout, kh, kw, g, s, s, pd, pd, dl, dl)
        pgeo = ConvGeo(n, c, h, w, cout, kh, kw, g, s, s, pd, pd, dl, dl, layout, DTYPES[dtype], DTYPES["float32"], 1)
        bn = Bn(ptr(mean, C.c_float), ptr(var, C.c_float), ptr(gamma, C.c_float), ptr(beta, C.c_float), eps)
        ysize = n * cout * oh * ow
        dt = DTYPES[dtype]
        cpu = [ptr(wt, C.c_float), ptr(bias, C.c_float), ptr(mean, C.c_float), ptr(var, C.c_float), ptr(gamma, C.c_float),
               ptr(beta, C.c_float), eps, 1]
        want_y = np.zeros(ysize, dtype=x.dtype)
        if self.core.core_conv_forward(geo, layout, dt, mode, ptr(x), *cpu, ptr(want_y)) != 0:
            raise Failure("core_conv_forward failed")
        xb, xp = self.upload(x)
        wb, wp = self.upload(wt)
        yb, yp = self.upload(np.zeros_like(want_y))
        sb, sp = self.upload(np.zeros(cout, np.float32))
        mb, mp = self.upload(np.zeros((ysize + 31) // 32, np.uint32))
        zb, zp = self.upload(np.zeros_like(want_y))
        self.p.call("conv_forward", self.p.device, C.byref(pgeo), mode, vp(xp), vp(wp), ptr(bias, C.c_float),
                    C.byref(bn), vp(yp), vp(sp), vp(mp), vp(zp))
        got_y = self.download(yp, want_y)
        label = f"{['conv2d', 'tune', 'eval'][mode]} {dtype} {case}"
        tol = CONV_TOL[dtype]
        self.conv_close(f"{label} y", decode(np, got_y, dtype), decode(np, want_y, dtype), tol)
        allocs = [xb, wb, yb, sb, mb, zb]
        if mode != CONV_PLAIN:
            # Where the outputs differ in sign (rounding near zero) the ReLUs pass different gradients: dy = 0 there.
            dyv = rng.standard_normal(ysize, dtype=np.float32)
            dyv[(decode(np, got_y, dtype) > 0) != (decode(np, want_y, dtype) > 0)] = 0
            dy = encode(np, dyv, dtype)
            want = {"dx": np.zeros_like(x), "dw": np.zeros_like(wt)}
            want.update({k: np.zeros(cout, np.float32) for k in ("dbias", "dgamma", "dbeta")})
            if self.core.core_conv_backward(geo, layout, dt, mode, ptr(x), *cpu, ptr(dy), ptr(want["dx"]),
                                            *(ptr(want[k], C.c_float) for k in ("dw", "dbias", "dgamma", "dbeta"))) != 0:
                raise Failure("core_conv_backward failed")
            dyb, dyp = self.upload(dy)
            outs = {k: self.upload(np.zeros_like(v)) for k, v in want.items()}
            allocs += [dyb] + [b for b, _ in outs.values()]
            grads = ConvGrads(*(vp(outs[k][1]) for k in ("dx", "dw", "dbias", "dgamma", "dbeta")))
            self.p.call("conv_backward", self.p.device, C.byref(pgeo), mode, vp(xp), vp(wp), ptr(bias, C.c_float),
                        C.byref(bn), vp(sp), vp(mp), vp(zp), vp(yp), vp(dyp), C.byref(grads))
            for k, v in want.items():
                got = self.download(outs[k][1], v)
                self.conv_close(f"{label} {k}", decode(np, got, dtype) if k == "dx" else got,
                                decode(np, v, dtype) if k == "dx" else v, tol)
        for a in allocs:
            self.p.free(a)

    def conv_fold_case(self, cout, patch, w_dtype):
        """conv_fold (any weight dtype) against the CPU fold, bit for bit."""
        np = self.np
        rng = np.random.default_rng(seed_of(cout, patch, w_dtype))
        w = encode(np, rng.standard_normal(cout * patch, dtype=np.float32) * 2, w_dtype)
        bias, mean, gamma, beta = (rng.standard_normal(cout).astype(np.float32) for _ in range(4))
        var = (rng.standard_normal(cout) ** 2 + 0.01).astype(np.float32)
        w32 = decode(np, w, w_dtype)
        want_w, want_b = np.zeros(cout * patch, np.float32), np.zeros(cout, np.float32)
        f = lambda a: ptr(a, C.c_float)
        self.core.core_conv_fold(cout, patch, f(w32), f(bias), f(mean), f(var), f(gamma), f(beta), 1e-4, f(want_w), f(want_b))
        wb, wp = self.upload(w)
        ob, op_ = self.upload(np.zeros_like(want_w))
        bb, bp = self.upload(np.zeros_like(want_b))
        bn = Bn(f(mean), f(var), f(gamma), f(beta), 1e-4)
        self.p.call("conv_fold", self.p.device, cout, patch, vp(wp), DTYPES[w_dtype], f(bias), C.byref(bn), vp(op_), vp(bp), None)
        got_w, got_b = self.download(op_, want_w), self.download(bp, want_b)
        for a in (wb, ob, bb):
            self.p.free(a)
        self.checks += 1
        if not (np.array_equal(got_w.view(np.uint32), want_w.view(np.uint32)) and np.array_equal(got_b.view(np.uint32), want_b.view(np.uint32))):
            self.fail(f"conv_fold {w_dtype} cout={cout} patch={patch}: differs from the CPU fold")

    def out_of_memory(self):
        self.checks += 1
        p = vp()
        st = Status()
        rc = self.p.api.alloc(self.p.device, 1 << 50, C.byref(p), C.byref(st))
        if rc != OOM:
            return self.fail(f"alloc(2^50): returned {rc}, expected out of memory: {st.message.decode()}")
        q = self.p.alloc(1 << 20)  # the device stays usable
        self.p.free(q)
        print(f"  out of memory reported as: {st.message.decode()}")


def pack_bits(np, bits):
    """uint8 0/1 array [..., C] -> uint32 words [..., ceil(C/32)], channel i at bit i%32 of word i//32."""
    c = bits.shape[-1]
    wc = (c + 31) // 32
    padded = np.zeros(bits.shape[:-1] + (wc * 32,), dtype=np.uint64)
    padded[..., :c] = bits
    weights = np.left_shift(np.uint64(1), np.arange(32, dtype=np.uint64))
    return (padded.reshape(bits.shape[:-1] + (wc, 32)) * weights).sum(axis=-1).astype(np.uint32)


def bconv_oracle(np, xb, wb, g, s, pd, dl, pad_zero, kind, clamp, scale, bias, lo, hi):
    """docs/DESIGN.md's binary convolution over ±1 values (the CPU core's conventions): xb [n, h, w, c] and
    wb [cout, kh, kw, cin_g] 0/1 bits; the float, int32 or packed 'bits' output."""
    n, h, w, c = xb.shape
    cout, kh, kw, cin_g = wb.shape
    cout_g = cout // g
    oh = (h + 2 * pd - dl * (kh - 1) - 1) // s + 1
    ow = (w + 2 * pd - dl * (kw - 1) - 1) // s + 1
    # Padded image of ±1 (or 0 for true zero padding), one einsum per group and tap.
    xv = 1 - 2 * xb.astype(np.int32)
    xp = np.full((n, h + 2 * pd, w + 2 * pd, c), 0 if pad_zero else 1, dtype=np.int32)
    xp[:, pd:pd + h, pd:pd + w, :] = xv
    wv = 1 - 2 * wb.astype(np.int32)
    dot = np.zeros((n, oh, ow, cout), dtype=np.int64)
    for gi in range(g):
        for ki in range(kh):
            for kj in range(kw):
                patch = xp[:, ki * dl: ki * dl + s * (oh - 1) + 1: s, kj * dl: kj * dl + s * (ow - 1) + 1: s,
                           gi * cin_g:(gi + 1) * cin_g]
                dot[..., gi * cout_g:(gi + 1) * cout_g] += np.einsum(
                    "nyxc,oc->nyxo", patch, wv[gi * cout_g:(gi + 1) * cout_g, ki, kj, :])
    dot = dot.astype(np.int32)
    if kind == 1:
        return dot
    sc = scale if scale is not None else np.ones(cout, np.float32)
    bi = bias if bias is not None else np.zeros(cout, np.float32)
    y = (dot.astype(np.float32) * sc).astype(np.float32) + bi
    if clamp:
        y = np.where(y < lo, lo, y)
        y = np.where(hi < y, hi, y)
    return y.astype(np.float32) if kind == 0 else pack_bits(np, (y < 0).astype(np.uint8))


def prototype_weights(np, rng, cout, g, kh, kw, cin_g, flip, prototypes=3):
    """0/1 weight bits [cout, kh, kw, cin_g]: a few prototype channels per group, each channel one of them
    with a fraction `flip` of its bits flipped (what MST reuse is for)."""
    protos = rng.integers(0, 2, size=(g * prototypes, kh, kw, cin_g), dtype=np.uint8)
    pick = np.array([(co // (cout // g)) * prototypes + co % prototypes for co in range(cout)])
    flips = (rng.random((cout, kh, kw, cin_g)) < flip).astype(np.uint8)
    return protos[pick] ^ flips


def mst_plan(np, wb, g, max_depth):
    """An MST plan in the plugin's form from 0/1 weight bits [cout, kh, kw, cin_g]: a tree that takes each
    channel from its nearest earlier channel of the group (Hamming distance, depth <= max_depth) when that is
    below K / 2, then the CPU's edge records (mst::build_execution: level order, [child, parent, nwords, D,
    (k, w_parent ^ w_child, w_parent & mask) ...]) and the host tables. Returns (edge words, roots, edges,
    level ends, depth, bits processed / (Cout * K))."""
    cout, kh, kw, cin_g = wb.shape
    cout_g, k_bits = cout // g, kh * kw * cin_g
    words = pack_bits(np, wb.reshape(cout, kh * kw, cin_g)).reshape(cout, -1)
    pm = (1 - 2 * wb.reshape(cout, -1).astype(np.int64))
    dist = (k_bits - pm @ pm.T) // 2
    parent, depth = [-1] * cout, [0] * cout
    for c in range(cout):
        first = c // cout_g * cout_g
        cands = [j for j in range(first, c) if depth[j] < max_depth]
        if cands:
            j = min(cands, key=lambda j: dist[c, j])
            if dist[c, j] < k_bits // 2:
                parent[c], depth[c] = j, depth[j] + 1
    roots = [c for c in range(cout) if parent[c] < 0]
    records, edges, level_ends, bits = [], [], [], len(roots) * k_bits
    for d in range(1, max(depth) + 1):
        for c in (c for c in range(cout) if depth[c] == d and parent[c] >= 0):
            p = parent[c]
            mask = words[p] ^ words[c]
            ks = [int(k) for k in np.flatnonzero(mask)]
            nbits = sum(bin(int(mask[k])).count("1") for k in ks)
            edges.append((c, p, len(ks), nbits, len(records) + 4))
            records += [c, p, len(ks), nbits]
            for k in ks:
                records += [k, int(mask[k]), int(words[p][k] & mask[k])]
            bits += nbits
        level_ends.append(len(edges))
    return (np.array(records or [0], dtype=np.uint32), roots, edges, level_ends, max(depth), bits / (cout * k_bits))


def mst_struct(np, dev_words, nwords, roots, edges, level_ends, trial):
    """The plugin's xnorm_cuda_mst (its host arrays kept alive on the returned struct)."""
    m = Mst()
    m.keep = ((C.c_int32 * max(1, len(roots)))(*roots), (MstEdge * max(1, len(edges)))(*(MstEdge(*e) for e in edges)),
              (C.c_int64 * max(1, len(level_ends)))(*level_ends))
    m.edge_words, m.edge_words_len = vp(dev_words), nwords
    m.roots, m.nroots = m.keep[0], len(roots)
    m.edges, m.nedges = m.keep[1], len(edges)
    m.level_ends, m.nlevels = m.keep[2], len(level_ends)
    m.trial = int(trial)
    return m


def binary_cases(rng, count):
    out = []
    while len(out) < count:
        g = int(rng.choice([1, 1, 1, 2, 3]))
        cin_g = int(rng.choice([1, 5, 31, 32, 33, 64, 70, 200]))  # 200: several 128-bit MMA steps per tap
        cout = g * int(rng.choice([1, 7, 32, 33, 40]))
        k = int(rng.choice([1, 3, 5]))
        s, pd, dl = int(rng.integers(1, 3)), int(rng.integers(0, 3)), int(rng.integers(1, 3))
        n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 10)), int(rng.integers(1, 10))
        if (h + 2 * pd - dl * (k - 1) - 1) < 0 or (w + 2 * pd - dl * (k - 1) - 1) < 0:
            continue
        out.append((n, h, w, g * cin_g, cout, g, k, k, s, pd, dl, bool(rng.integers(0, 2)), int(rng.integers(0, 3)),
                    bool(rng.integers(0, 2))))
    return out


def conv_cases(rng, count, small):
    """(n, c, h, w, cout, kh, kw, groups, stride, pad, dilation, layout): odd channel counts, groups, depthwise,
    stride, padding, dilation, rectangular kernels, both layouts; `small` keeps them quick on the emulation."""
    out = []
    while len(out) < count:
        g = int(rng.choice([1, 1, 2, 3]))
        cin_g = int(rng.choice([1, 3, 5, 16, 17] if small else [1, 3, 16, 17, 33, 64, 100]))
        cout_g = int(rng.choice([1, 7, 16, 33] if small else [1, 7, 16, 33, 64, 70]))
        if rng.random() < 0.15:
            g, cin_g = int(rng.choice([4, 8])), 1  # depthwise (with a channel multiplier)
        kh, kw = int(rng.choice([1, 3, 3, 5])), int(rng.choice([1, 3, 3]))
        s, pd, dl = int(rng.integers(1, 3)), int(rng.integers(0, 3)), int(rng.integers(1, 3))
        n = int(rng.integers(1, 3))
        h, w = (int(rng.integers(3, 10)), int(rng.integers(3, 10))) if small else (int(rng.integers(3, 30)), int(rng.integers(3, 30)))
        if h + 2 * pd - dl * (kh - 1) - 1 < 0 or w + 2 * pd - dl * (kw - 1) - 1 < 0:
            continue
        out.append((n, g * cin_g, h, w, g * cout_g, kh, kw, g, s, pd, dl, int(rng.integers(0, 2))))
    return out


def random_shapes(rng, layout, count):
    cs = [1, 3, 7, 32, 33, 64, 255, 257, 300]
    ss = [1, 2, 5, 49, 1000, 4097, 70001]
    out = []
    for _ in range(count):
        n, c = rng.choice([1, 2, 3, 5]), rng.choice(cs)
        s = rng.choice(ss)
        while n * c * s > 3_000_000:
            s = max(1, s // 7)
        if s > 1 and rng.random() < 0.5:
            h = next((d for d in range(int(math.isqrt(s)), 0, -1) if s % d == 0), 1)
            spatial = [h, s // h]
        else:
            spatial = [s] if s > 1 or rng.random() < 0.5 else []
        out.append([n, c] + spatial if layout == NCHW else [n] + spatial + [c])
    return out


def correctness(ck, quick):
    rng = random.Random(1234)
    per_layout = 6 if quick else 14
    for layout in (NCHW, NHWC):
        for shape in random_shapes(rng, layout, per_layout):
            c = shape[1] if layout == NCHW else shape[-1]
            for dtype in DTYPES:
                for over in OVER:
                    groups = next((k for k in (4, 3, 2) if c % k == 0), 1) if over == "group" else 1
                    ck.moments_case(shape, layout, dtype, over, groups, misalign=rng.choice([0, 0, 1, 3]), offset=0)
                ck.batch_norm_case(shape, layout, dtype, per_instance=rng.random() < 0.5, relu=rng.random() < 0.5,
                                   misalign=rng.choice([0, 1]), in_place=rng.random() < 0.3)
    # A large mean against a unit spread: the per-item shift must keep the variance exact.
    for layout, shape in ((NCHW, [4, 3, 50000]), (NHWC, [4, 50000, 3])):
        ck.moments_case(shape, layout, "float32", "channel", 1, misalign=0, offset=1e6)
    brng = ck.np.random.default_rng(77)
    for case in binary_cases(brng, 12 if quick else 40):
        ck.binary_conv_case(brng, case)
    # MST plans: (n, h, w, c, cout, groups, k, stride, pad, dilation, pad_zero, output, clamp, maxDepth).
    mst_cases = [(1, 6, 5, 37, 40, 1, 3, 1, 1, 1, False, 0, True, 2), (1, 7, 6, 66, 36, 2, 3, 2, 1, 1, True, 2, False, 8),
                 (2, 5, 5, 15, 12, 3, 3, 2, 2, 2, True, 1, False, 4), (1, 3, 4, 70, 33, 1, 1, 1, 0, 1, False, 2, True, 8),
                 (1, 6, 6, 64, 64, 2, 3, 1, 1, 1, True, 0, True, 3)]
    if not (quick or ck.emulated):
        mst_cases.append((2, 14, 14, 256, 256, 1, 3, 1, 1, 1, True, 2, False, 8))
    for case in mst_cases:
        ck.mst_case(brng, case)
    for layout in (NCHW, NHWC):
        for shape in random_shapes(rng, layout, 3 if quick else 8):
            for dtype in DTYPES:
                ck.bits_case(shape, layout, dtype, per_channel=rng.random() < 0.5, misalign=rng.choice([0, 1]))
    crng = ck.np.random.default_rng(99)
    small = quick or ck.emulated
    for i, case in enumerate(conv_cases(crng, 6 if small else 30, small)):
        dtype = list(DTYPES)[i % 3]
        for mode in (CONV_PLAIN, CONV_TUNE, CONV_EVAL) if i % 2 == 0 else (CONV_TUNE,):
            ck.conv_case(case, dtype, mode)
    for w_dtype in DTYPES:
        ck.conv_fold_case(37, 30, w_dtype)
    ck.out_of_memory()


def bench(torch, fn, budget=0.25):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    one = max(time.perf_counter() - t0, 1e-6)
    iters = max(3, min(100, int(budget / one)))
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def benchmarks(torch, p, deadline):
    F = torch.nn.functional
    free, _ = torch.cuda.mem_get_info()
    configs = [
        ("nchw", "float32", (64, 256, 56, 56)),
        ("nchw", "float32", (128, 128, 128, 128)),
        ("nhwc", "float32", (128, 128, 128, 128)),
        ("nchw", "float16", (256, 128, 128, 128)),
        ("nhwc", "float16", (256, 128, 128, 128)),
        ("nchw", "float32", (256, 1024, 14, 14)),
        ("nhwc", "float32", (512, 7, 7, 2048)),
    ]
    print("\nbenchmarks (ms per call; GB/s of tensor traffic; % of the device's copy bandwidth; ratio = PyTorch time / xnorm time)")
    x0 = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    y0 = torch.empty_like(x0)
    t = bench(torch, lambda: y0.copy_(x0))
    ceiling = 2 * x0.numel() * 4 / t / 1e9
    del x0, y0
    torch.cuda.empty_cache()
    print(f"  device copy bandwidth (1 GiB copy_): {ceiling:.0f} GB/s")
    hdr = f"  {'op':<26} {'layout':<5} {'dtype':<8} {'shape':<22} {'GB':>6} {'xnorm ms':>9} {'GB/s':>7} {'%copy':>6} {'torch ms':>9} {'ratio':>6}"
    print(hdr)
    for layout, dtype, shape in configs:
        if time.perf_counter() > deadline:
            print("  (time budget reached; remaining benchmarks skipped)")
            break
        tdt = torch_dtype(torch, dtype)
        numel = math.prod(shape)
        nbytes = numel * torch.tensor([], dtype=tdt).element_size()
        if 2.5 * nbytes > free:
            print(f"  skip {layout} {dtype} {shape}: needs {2.5 * nbytes / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
            continue
        x = torch.randn(shape, dtype=tdt, device="cuda")  # stored as given: NCHW or NHWC
        y = torch.empty_like(x)
        lay = NCHW if layout == "nchw" else NHWC
        geo = geometry(shape, lay)
        c = geo.c
        xt = x if layout == "nchw" else x.permute(0, 3, 1, 2)  # torch's view: NCHW shape, channels-last memory
        yt = y if layout == "nchw" else y.permute(0, 3, 1, 2)
        red = (0, 2, 3)
        mean_h, m2_h = (C.c_double * c)(), (C.c_double * c)()
        cnt = C.c_int64()
        torch.cuda.synchronize()

        def ours_moments(over="channel"):
            slots = c if over == "channel" else geo.n * c
            mh, qh = (mean_h, m2_h) if over == "channel" else ((C.c_double * slots)(), (C.c_double * slots)())
            p.call("moments", p.device, vp(x.data_ptr()), DTYPES[dtype], C.byref(geo), OVER[over], 1, mh, qh,
                   None, None, C.byref(cnt))

        rm = torch.zeros(c, device="cuda")
        rv = torch.ones(c, device="cuda")
        w = torch.ones(c, device="cuda")
        b = torch.zeros(c, device="cuda")
        co = [torch.zeros(c), torch.zeros(c), torch.ones(c), torch.zeros(c)]
        cptr = [C.cast(vp(t_.data_ptr()), fp) for t_ in co]

        def ours_apply():
            p.call("batch_norm", p.device, vp(x.data_ptr()), vp(y.data_ptr()), DTYPES[dtype], C.byref(geo), 0,
                   *cptr, 0)

        def ours_train():
            ours_moments()
            ours_apply()

        rows = [
            ("moments/channel", ours_moments, lambda: torch.var_mean(xt, dim=red, unbiased=False), nbytes),
            ("moments/instance", lambda: ours_moments("instance"), lambda: torch.var_mean(xt, dim=(2, 3), unbiased=False), nbytes),
            ("BN apply (eval forward)", ours_apply, lambda: F.batch_norm(xt, rm, rv, w, b, training=False), 2 * nbytes),
            ("BN training forward", ours_train, lambda: F.batch_norm(xt, None, None, w, b, training=True), 3 * nbytes),
        ]
        for name, ours, theirs, traffic in rows:
            t_ours = bench(torch, ours)
            t_torch = bench(torch, theirs)
            gbs = traffic / t_ours / 1e9
            print(f"  {name:<26} {layout:<5} {dtype:<8} {str(list(shape)):<22} {nbytes / 1e9:>6.2f} {t_ours * 1e3:>9.3f} "
                  f"{gbs:>7.0f} {100 * gbs / ceiling:>5.0f}% {t_torch * 1e3:>9.3f} {t_torch / t_ours:>6.2f}")
        del x, y, xt, yt
        torch.cuda.empty_cache()


def bench_binary(torch, p, deadline, algorithms):
    """Binary convolution (int32 and float outputs) against PyTorch's fp16 convolution of the same shape
    (channels-last, cuDNN). TOPS counts 2 operations per multiply-accumulate of the ±1 (or fp16) values."""
    F = torch.nn.functional
    print("\nbinary convolution vs PyTorch fp16 conv2d (ratio = PyTorch time / xnorm time)")
    print(f"  {'shape (N,H,W,C -> Cout, k)':<34} {'output':<11} {'xnorm ms':>9} {'TOPS':>7} {'fp16 ms':>9} {'TOPS':>7} {'ratio':>6}")
    for n, h, w, c, cout, k in ((32, 56, 56, 256, 256, 3), (64, 28, 28, 512, 512, 3), (256, 14, 14, 1024, 1024, 1)):
        if time.perf_counter() > deadline:
            print("  (time budget reached; remaining benchmarks skipped)")
            break
        pad = k // 2
        wc, wg = (c + 31) // 32, (c + 31) // 32
        x = torch.randint(-2 ** 31, 2 ** 31 - 1, (n * h * w * wc,), dtype=torch.int32, device="cuda")
        wt = torch.randint(-2 ** 31, 2 ** 31 - 1, (cout * k * k * wg,), dtype=torch.int32, device="cuda")
        out = torch.empty(n * h * w * cout, dtype=torch.float32, device="cuda")
        xh = torch.randn(n, c, h, w, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
        wh = torch.randn(cout, c, k, k, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
        macs = n * h * w * cout * c * k * k
        t_torch = bench(torch, lambda: F.conv2d(xh, wh, padding=pad))
        for alg in algorithms:
            for kind, name in ((1, "int32"), (0, "float")):
                prm = BConv(n, h, w, c, cout, c, k, k, 1, 1, 1, pad, pad, 1, 1, 0, kind, 0, 0.0, 0.0, ALGORITHMS[alg])
                torch.cuda.synchronize()

                def ours():
                    p.call("binary_conv2d", p.device, vp(x.data_ptr()), vp(wt.data_ptr()), C.byref(prm), None, None,
                           vp(out.data_ptr()))

                t = bench(torch, ours)
                print(f"  {str((n, h, w, c, cout, k)):<34} {name + ' ' + alg:<11} {t * 1e3:>9.3f} {2 * macs / t / 1e12:>7.1f} "
                      f"{t_torch * 1e3:>9.3f} {2 * macs / t_torch / 1e12:>7.1f} {t_torch / t:>6.2f}")
        del x, wt, out, xh, wh
        torch.cuda.empty_cache()


def bench_mst(torch, p, deadline, n=32, hw=14, c=256):
    """MST plans against the dense weights on a c -> c, 3x3 layer (default 256 -> 256 at 14 x 14, batch 32; int32 output), for
    weights of 16 prototype channels with a fraction of their bits flipped: the plugin's own trial (CUDA events)
    and a timed loop of each. ratio = dense time / plan time (> 1: the plan is faster)."""
    import numpy as np
    print(f"\nMST plan vs dense weights, {c} -> {c}, 3x3, {hw} x {hw}, batch {n} (ratio = dense time / plan time)")
    print(f"  {'flip':>5} {'depth':>5} {'ops saved':>9} {'dense ms':>9} {'plan ms':>9} {'ratio':>6} {'trial ratio':>11}")
    h, w, cout, k = hw, hw, c, 3
    rng = np.random.default_rng(5)
    x = torch.randint(-2 ** 31, 2 ** 31 - 1, (n * h * w * c // 32,), dtype=torch.int32, device="cuda")
    out = torch.empty(n * h * w * cout, dtype=torch.int32, device="cuda")
    prm = BConv(n, h, w, c, cout, c, k, k, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0.0, 0.0, 0)
    for flip in (0.01, 0.03, 0.1, 0.2):
        if time.perf_counter() > deadline:
            print("  (time budget reached; remaining benchmarks skipped)")
            return
        wb = prototype_weights(np, rng, cout, 1, k, k, c, flip, prototypes=16)
        records, roots, edges, level_ends, depth, processed = mst_plan(np, wb, 1, 8)
        wt = torch.from_numpy(pack_bits(np, wb).reshape(-1).view(np.int32)).cuda()
        ew = torch.from_numpy(records.view(np.int32)).cuda()
        plan = mst_struct(np, ew.data_ptr(), records.size, roots, edges, level_ends, 0)
        torch.cuda.synchronize()

        def dense():
            p.call("binary_conv2d", p.device, vp(x.data_ptr()), vp(wt.data_ptr()), C.byref(prm), None, None,
                   vp(out.data_ptr()))

        def run_plan():
            p.call("binary_conv2d_mst", p.device, vp(x.data_ptr()), vp(wt.data_ptr()), C.byref(prm), C.byref(plan),
                   None, None, vp(out.data_ptr()))

        t_dense, t_plan = bench(torch, dense), bench(torch, run_plan)
        trial = mst_struct(np, ew.data_ptr(), records.size, roots, edges, level_ends, 1)
        p.call("binary_conv2d_mst", p.device, vp(x.data_ptr()), vp(wt.data_ptr()), C.byref(prm), C.byref(trial),
               None, None, vp(out.data_ptr()))
        print(f"  {flip:>5.2f} {depth:>5} {100 * (1 - processed):>8.0f}% {t_dense * 1e3:>9.3f} {t_plan * 1e3:>9.3f} "
              f"{t_dense / t_plan:>6.2f} {trial.dense_ms / trial.plan_ms:>11.2f}")
        del wt, ew
    del x, out
    torch.cuda.empty_cache()


def bench_convbn(torch, p, deadline):
    """Conv + BN Tune forward (ReLU, saving x + s + mask) + backward (all five gradients) against PyTorch's
    cuDNN conv2d + eval-mode batch_norm + ReLU, forward and autograd backward of the same five gradients, on the
    ResNet-18 3x3 layers at batch 8 (float32: both use TF32 tensor cores, PyTorch's cuDNN default; float16).
    TFLOPS counts 3 convolutions (forward, backward-data, backward-filter) of 2 * MACs each."""
    F = torch.nn.functional
    print("\nConv + BN Tune forward + backward vs cuDNN conv2d + eval-mode BN + ReLU with autograd (ratio = PyTorch time / xnorm time)")
    print(f"  {'layer (N, C, H, W), 3x3':<26} {'dtype':<8} {'xnorm ms':>9} {'TFLOPS':>7} {'torch ms':>9} {'TFLOPS':>7} {'ratio':>6}")
    for dtype in ("float32", "float16"):
        for c, hw in ((64, 56), (128, 28), (256, 14), (512, 7)):
            if time.perf_counter() > deadline:
                print("  (time budget reached; remaining benchmarks skipped)")
                return
            n = 8
            tdt = torch_dtype(torch, dtype)
            x = torch.randn(n, c, hw, hw, device="cuda", dtype=tdt)
            w = torch.randn(c, c, 3, 3, device="cuda") * 0.05
            dy = torch.randn(n, c, hw, hw, device="cuda", dtype=tdt)
            host = [torch.randn(c).numpy().astype("float32") for _ in range(5)]
            bias, mean, gamma, beta = host[:4]
            var = (host[4] ** 2 + 0.5).astype("float32")
            bn = Bn(*(ptr(a, C.c_float) for a in (mean, var, gamma, beta)), 1e-5)
            geo = ConvGeo(n, c, hw, hw, c, 3, 3, 1, 1, 1, 1, 1, 1, 1, NCHW, DTYPES[dtype], DTYPES["float32"], 1)
            y, dx = torch.empty_like(x), torch.empty_like(x)
            s = torch.empty(c, device="cuda")
            mask = torch.empty((y.numel() + 31) // 32, dtype=torch.int32, device="cuda")
            dw = torch.empty_like(w)
            db, dg, dbeta = (torch.empty(c, device="cuda") for _ in range(3))
            grads = ConvGrads(*(vp(t.data_ptr()) for t in (dx, dw, db, dg, dbeta)))
            bptr = ptr(bias, C.c_float)
            torch.cuda.synchronize()

            def ours():
                p.call("conv_forward", p.device, C.byref(geo), CONV_TUNE, vp(x.data_ptr()), vp(w.data_ptr()), bptr,
                       C.byref(bn), vp(y.data_ptr()), vp(s.data_ptr()), vp(mask.data_ptr()), None)
                p.call("conv_backward", p.device, C.byref(geo), CONV_TUNE, vp(x.data_ptr()), vp(w.data_ptr()), bptr,
                       C.byref(bn), vp(s.data_ptr()), vp(mask.data_ptr()), None, None, vp(dy.data_ptr()), C.byref(grads))

            xt = x.clone().requires_grad_(True)
            wt = w.to(tdt).requires_grad_(True)
            # BN parameters and statistics in float32 (PyTorch's mixed-precision BN), the conv bias in x's dtype.
            bt = torch.from_numpy(bias).to("cuda", tdt).requires_grad_(True)
            gt, bet = (torch.from_numpy(a).to("cuda").requires_grad_(True) for a in (gamma, beta))
            rm, rv = torch.from_numpy(mean).to("cuda"), torch.from_numpy(var).to("cuda")

            def theirs():
                out = F.relu(F.batch_norm(F.conv2d(xt, wt, bt, padding=1), rm, rv, gt, bet, training=False, eps=1e-5))
                torch.autograd.grad(out, (xt, wt, bt, gt, bet), dy)

            flops = 3 * 2 * n * hw * hw * c * c * 9
            t_ours, t_torch = bench(torch, ours), bench(torch, theirs)
            print(f"  {str((n, c, hw, hw)):<26} {dtype:<8} {t_ours * 1e3:>9.3f} {flops / t_ours / 1e12:>7.1f} "
                  f"{t_torch * 1e3:>9.3f} {flops / t_torch / 1e12:>7.1f} {t_torch / t_ours:>6.2f}")
            del x, w, dy, y, dx, s, mask, dw, db, dg, dbeta, xt, wt, bt, gt, bet
            torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plugin", required=True)
    ap.add_argument("--core", required=True)
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewer correctness cases, no benchmarks")
    ap.add_argument("--no-bench", action="store_true", help="correctness only (e.g. on the CPU emulation)")
    ap.add_argument("--budget", type=float, default=240, help="seconds for the whole check")
    args = ap.parse_args()
    deadline = time.perf_counter() + args.budget

    try:
        plugin = Plugin(args.plugin, args.device)
    except (OSError, Failure) as e:
        print(f"cannot use the plugin {args.plugin}: {e}")
        return 1
    n = C.c_int32()
    st = Status()
    if plugin.api.device_count(C.byref(n), C.byref(st)) != OK:
        print(f"device probe failed (no usable GPU): {st.message.decode(errors='replace')}")
        return 3
    for d in range(n.value):
        info = DeviceInfo()
        plugin.call("device_info", d, C.byref(info))
        print(f"cuda:{d}: {info.name.decode()} (sm_{info.major}{info.minor}, {info.multiprocessors} SMs, "
              f"{info.memory_bytes / 2 ** 30:.1f} GiB)")
    if args.device >= n.value:
        print(f"--device {args.device}: only {n.value} device(s)")
        return 1
    try:
        import numpy as np
    except ImportError as e:
        print(f"numpy is needed for the correctness data: {e}")
        return 4
    core = C.CDLL(args.core)
    info = DeviceInfo()
    plugin.call("device_info", args.device, C.byref(info))
    ck = Checker(np, plugin, core, info.major * 10 + info.minor)
    ck.emulated = b"emulation" in info.name
    print("\ncorrectness against the CPU core kernels")
    t0 = time.perf_counter()
    try:
        correctness(ck, args.quick)
    except Failure as e:
        ck.fail(str(e))
    print(f"  {ck.checks} checks, {ck.failures} failed ({time.perf_counter() - t0:.1f} s)")
    if not (args.quick or args.no_bench):
        try:
            import torch
        except ImportError as e:
            print(f"PyTorch is needed for the benchmarks: {e}")
            return 4
        if not torch.cuda.is_available():
            print("PyTorch sees no GPU (a CPU-only build of PyTorch?), so it cannot be compared")
            return 4
        torch.cuda.set_device(args.device)
        benchmarks(torch, plugin, deadline)
        bench_binary(torch, plugin, deadline, ck.algorithms)
        bench_mst(torch, plugin, deadline)
        bench_convbn(torch, plugin, deadline)
    return 1 if ck.failures else 0


if __name__ == "__main__":
    sys.exit(main())
