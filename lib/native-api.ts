// The addon's entry points with their argument and result types: the one place lib/ and the C++ side
// (native/addon/*.cc) meet. A field renamed on one side must be renamed here, so `tsc` finds every caller.
//
// Conventions: each op takes one arguments object; `async` true returns a Promise of the result. Tensor
// fields are typed arrays when `device` is -1 (or absent: the CPU) and device handles on a CUDA device;
// per-channel parameters are host Float32Arrays on both.
import type { XnormError } from './errors';

/** An opaque handle to device memory (made by cudaAlloc, freed by cudaFree or the GC). */
export type DeviceHandle = { readonly __xnormDeviceMemory: unique symbol };
/** Opaque handles to the native weight objects (freed by the GC; device copies by dispose). */
export type WeightsHandle = { readonly __xnormBinaryWeights: unique symbol };
export type PlanHandle = { readonly __xnormMstPlan: unique symbol };
export type SavedHandle = { readonly __xnormConvBnSaved: unique symbol };
export type PreparedHandle = { readonly __xnormConvWeights: unique symbol };

type HostArray = Float32Array | Uint16Array | Int32Array | Uint8Array | Uint32Array;
export type TensorRef = HostArray | DeviceHandle;
export type NativeDType = 'float32' | 'float16' | 'bfloat16' | 'int32' | 'uint8' | 'bit';
type FloatDType = 'float32' | 'float16' | 'bfloat16';
type Layout = 'nchw' | 'nhwc';

/** An op with a Sync form (async false or absent) and a Promise form (async true). */
interface Op<A, R = void> {
  (args: A, async?: false): R;
  (args: A, async: true): Promise<R>;
  (args: A, async: boolean): R | Promise<R>;
}

// ---------------------------------------------------------------------------------------------------
// Convolution and Conv + BN (native/addon/convbn.cc)

/** Stride, padding and dilation along H and W: the window of every convolution, float or binary. */
export interface Window {
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
  dilationH: number;
  dilationW: number;
}

/** The geometry every conv entry point reads (its `device` decides where the op runs). */
export interface ConvArgs extends Window {
  device: number;
  dtype: FloatDType;
  /** float32 on the CPU; the weight's own dtype on a GPU */
  wDtype: FloatDType;
  xShape: number[];
  wShape: number[];
  groups: number;
  layout: Layout;
  relu: boolean;
}

/** Frozen BN statistics and affine parameters, host float32 [Cout]. */
export interface NativeBn {
  mean: Float32Array;
  var: Float32Array;
  gamma?: Float32Array;
  beta?: Float32Array;
  eps: number;
}

interface ConvTensors {
  x: TensorRef;
  weight: TensorRef;
  bias?: Float32Array;
}

export interface ConvBnForwardArgs extends ConvArgs, ConvTensors, NativeBn {
  mode: 'tune' | 'eval';
  y: TensorRef;
  /** Made by convBnSaved from the same arguments: receives s (+ the ReLU mask) in Tune mode, z in Eval mode. */
  saved?: SavedHandle;
}

/** What convBnSaved reads: the forward's arguments (y only for Eval with ReLU, which keeps the output). */
export type ConvBnSavedArgs = Omit<ConvBnForwardArgs, 'saved' | 'y'> & { y?: TensorRef };

export interface ConvBnBackwardArgs {
  /** dy's device, which must be the saved state's */
  device: number;
  saved: SavedHandle;
  dy: TensorRef;
  /** the gradients wanted (absent: not computed) */
  dx?: TensorRef;
  dWeight?: TensorRef;
  dBias?: TensorRef;
  dGamma?: TensorRef;
  dBeta?: TensorRef;
}

export interface ConvBnFoldArgs extends NativeBn {
  device: number;
  wShape: number[];
  wDtype: FloatDType;
  weight: TensorRef;
  bias?: Float32Array;
  wOut: TensorRef;
  bOut: TensorRef;
}

/** Test hook: the fast float32 CPU passes alone, or the references. */
export interface ConvKernelArgs extends Omit<ConvArgs, 'device' | 'wDtype' | 'relu'> {
  which: 'forward' | 'backwardData' | 'backwardFilter';
  reference?: boolean;
  x?: HostArray;
  weight: Float32Array;
  bias?: Float32Array;
  y?: HostArray;
  dy?: HostArray;
  dx?: HostArray;
}

// ---------------------------------------------------------------------------------------------------
// BN statistics (native/addon/bnstats.cc)

export interface MomentsArgs {
  device?: number;
  x: TensorRef;
  dtype: FloatDType;
  shape: readonly number[];
  layout: Layout;
  over: 'channel' | 'instance' | 'group';
  groups: number;
  /** host float64 results */
  mean: Float64Array;
  m2: Float64Array;
  /** GPU only: float32 copies of the results left on the device */
  meanF32?: DeviceHandle;
  m2F32?: DeviceHandle;
}

export interface BatchNormArgs {
  device?: number;
  x: TensorRef;
  y: TensorRef;
  dtype: FloatDType;
  shape: readonly number[];
  layout: Layout;
  perInstance: boolean;
  /** per slot ([C] or [N*C]): mean split in two float32 parts, scale = gamma / sqrt(var + eps), beta */
  mean: Float32Array;
  meanLo: Float32Array;
  scale: Float32Array;
  beta: Float32Array;
  relu: boolean;
}

// ---------------------------------------------------------------------------------------------------
// Binary convolution and MST plans (native/addon/binary.cc)

/** x as [N, C, S] (S = product of the spatial dims). */
interface BitsGeometry {
  device?: number;
  layout: Layout;
  n: number;
  c: number;
  s: number;
}

export interface PackBitsArgs extends BitsGeometry {
  x: TensorRef;
  /** float32 on the CPU; x's own dtype on a GPU */
  dtype: FloatDType;
  thresholds?: Float32Array;
  threshold: number;
  out: TensorRef;
}

export interface UnpackBitsArgs extends BitsGeometry {
  b: TensorRef;
  out: TensorRef;
}

export interface PackWeightsArgs {
  /** float32 [Cout, Cin/groups, kh, kw] */
  w: Float32Array;
  wShape: number[];
  groups: number;
}

/** What a native plan reports about itself once it is built. */
export interface PlanInfo {
  plan: PlanHandle;
  parent: Int32Array;
  /** depth of each channel (0 = root) */
  depthOf: Int32Array;
  depth: number;
  totalDistance: number;
  bitsProcessed: number;
  majorityChannels: number;
  nedges: number;
  reuse: 'auto' | 'always' | 'never';
  /** the output kinds whose CPU calls run the edges */
  edgesFor: 'all' | 'bits';
  maxDepth: number;
}

/** Weights a plan's bytes carried (version 2), made into a native weights object. */
export interface RebuiltWeights {
  weights: WeightsHandle;
  /** [Cout, Cin/groups, kh, kw] */
  shape: number[];
  groups: number;
}

export interface BinaryConvArgs extends Window {
  device: number;
  x: TensorRef;
  xShape: number[];
  /** dense weights, or an MST plan (bit-identical results) */
  weights?: WeightsHandle;
  plan?: PlanHandle;
  padValue: 'one' | 'zero';
  output: 'float' | 'bits' | 'int32';
  scale?: Float32Array;
  bias?: Float32Array;
  clampLo?: number;
  clampHi?: number;
  out: TensorRef;
  /** GPU tests and checks: which kernel runs (default: the plugin picks) */
  algorithm?: 'auto' | 'simt' | 'mma';
}

// ---------------------------------------------------------------------------------------------------
// CUDA plugin and device memory (native/addon/cuda_loader.cc)

export interface NativeCudaStatus {
  tried: boolean;
  available?: boolean;
  reason?: string;
  plugin?: string;
  cudaVersion?: string;
  driverVersion?: string;
  driverNeeded?: string;
  devices?: { name: string; computeCapability: string; memoryBytes: number; multiprocessors: number }[];
}

export interface NativeInfo {
  threads: number;
  isaLevel: string;
  isa: string[];
  isaWarning: string;
  napi: number;
  compiler: string;
}

export interface OutputPoolStats {
  idleBytes: number;
  liveBytes: number;
  maxIdleBytes: number;
}

/** Two float32 operands over an [outer, mid, inner] view, each spanning the dimensions flagged. */
export interface BroadcastArgs {
  outer: number; mid: number; inner: number;
  a: Float32Array; aOuter: boolean; aMid: boolean; aInner: boolean;
  b: Float32Array; bOuter: boolean; bMid: boolean; bInner: boolean;
}

export type UnaryOp = 'relu' | 'relu6' | 'neg' | 'square' | 'sqrt' | 'rsqrt' | 'abs' | 'exp' | 'sigmoid' | 'tanh' | 'step'
  | 'leakyRelu' | 'elu' | 'copy';

export interface NativeAddon {
  /** Once per environment: native failures become XnormErrors; async ops pin the memory they read. */
  setup(errorClass: typeof XnormError, markUntransferable: (buffer: ArrayBuffer) => void): void;
  info(): NativeInfo;
  setNumThreads(args: { threads: number }): void;
  prepareOutput(args: { buffer: Uint8Array; bytes: number }): number;
  /** An ArrayBuffer of `bytes` (>= 4 KiB) on a block of the output pool (contents unspecified), or null
   * where the runtime refuses external ArrayBuffers or, with idleOnly, when no idle block of its size
   * class is left. */
  allocOutput(args: { bytes: number; idleOnly?: boolean }): ArrayBuffer | null;
  /** dispose() of a pooled output: detaches the buffer and returns its block once no op holds it. */
  releaseOutput(buffer: ArrayBuffer): void;
  /** One more idle block of the size class of `bytes` (within the idle limit). */
  warmOutput(args: { bytes: number }): void;
  /** The output pool's bytes (idle: kept for reuse; live: held by tensors or ops) and its idle limit. */
  outputPool(args: { maxIdleBytes?: number }): OutputPoolStats;

  /** With `prepared` (CPU) instead of `weight`: the ConvWeights' packed weights, whose shape is wShape. */
  conv2d: Op<ConvArgs & Omit<ConvTensors, 'weight'> & { weight?: TensorRef; prepared?: PreparedHandle; y: TensorRef }>;
  /** The plain conv's gradients (CPU): dx from dy and the weight, dWeight from x and dy; absent ones skipped. */
  conv2dBackward: Op<ConvArgs & { x?: TensorRef; weight?: TensorRef; dy: TensorRef; dx?: TensorRef; dWeight?: TensorRef }>;
  /** A ConvWeights native object: float32 CPU weights packed for the conv kernels. */
  prepareConv: Op<{ weight: Float32Array; wShape: number[]; groups: number }, PreparedHandle>;
  /** Host bytes a ConvWeights holds (grows when its Winograd form is first made). */
  convWeightsBytes(args: { prepared: PreparedHandle }): number;
  /** ConvWeights.dispose(): drops the packed weights now (ops in flight keep theirs). */
  releaseConvWeights(args: { prepared: PreparedHandle }): void;
  convBnForward: Op<ConvBnForwardArgs>;
  /** A ConvBnSaved native object: the geometry, BN parameters, x and weight, and the state it owns. */
  convBnSaved(args: ConvBnSavedArgs): SavedHandle;
  convBnBackward: Op<ConvBnBackwardArgs>;
  /** ConvBnSaved.dispose(): drops the state now (ops in flight keep what they read). */
  releaseSaved(args: { saved: SavedHandle }): void;
  /** Test hook: copies of a CPU saved state's s and ReLU mask (Tune mode). */
  savedState(args: { saved: SavedHandle }): { s?: Float32Array; mask?: Uint32Array };
  convBnFold(args: ConvBnFoldArgs): void;
  convKernel(args: ConvKernelArgs): void;

  /** The tfjs backend's glue kernels (host float32; lib/tfjs/elementwise.ts): y = op(a, b) over a
   * [outer, mid, inner] view, each operand spanning the dimensions flagged (broadcast along the rest). */
  elementwiseBinary: Op<BroadcastArgs & { op: 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min' | 'squaredDiff'; y: Float32Array }>;
  /** The same view as elementwiseBinary with a 0/1 byte per element (tfjs 'bool'). */
  elementwiseCompare: Op<BroadcastArgs & { op: 'greater' | 'greaterEqual' | 'less' | 'lessEqual' | 'equal' | 'notEqual'; y: Uint8Array }>;
  boolToFloat32: Op<{ size: number; x: Uint8Array; y: Float32Array }>;
  elementwiseUnary: Op<{ op: UnaryOp; size: number; alpha?: number; x: Float32Array; y: Float32Array }>;
  /** y[o, i] = reduce over m of x[o, m, i]. */
  /** Max / average pooling over NHWC and their gradients (y is dx for the gradients). */
  pool2d: Op<{
    op: 'max' | 'avg' | 'maxGrad' | 'avgGrad';
    n: number; h: number; w: number; c: number; kh: number; kw: number; sh: number; sw: number;
    padTop: number; padLeft: number; oh: number; ow: number;
    x?: Float32Array; dy?: Float32Array; y: Float32Array;
  }>;
  reduceMid: Op<{ op: 'sum' | 'mean' | 'max' | 'min'; outer: number; mid: number; inner: number; x: Float32Array; y: Float32Array }>;
  convInfo(args: Record<string, never>): string;

  moments: Op<MomentsArgs, number>;
  momentsReference(args: MomentsArgs): number;
  batchNorm: Op<BatchNormArgs>;

  packBits: Op<PackBitsArgs>;
  unpackBits: Op<UnpackBitsArgs>;
  packWeights: Op<PackWeightsArgs, WeightsHandle>;
  weightsWords(args: { weights: WeightsHandle }): Uint32Array;
  /** `parent` (tests and tools) adopts that tree, checked, instead of building one. */
  mstPlan: Op<{ weights: WeightsHandle; reuse: 'auto' | 'always' | 'never'; maxDepth: number; parent?: Int32Array }, PlanInfo>;
  /** `withWeights`: version 2, the weights stored too. */
  mstSerialize(args: { plan: PlanHandle; withWeights: boolean }): Uint8Array;
  /** Without `weights` the bytes must carry them; `rebuilt` is then the weights decoded from them. */
  mstDeserialize(args: { weights?: WeightsHandle; bytes: Uint8Array }): PlanInfo & { rebuilt?: RebuiltWeights };
  /** Frees the device copies a weights or plan object holds (ops in flight keep theirs). */
  releaseDeviceCopies(args: { weights?: WeightsHandle; plan?: PlanHandle }): void;
  /** Test hook: how the plan's next call on CUDA device `device` runs. */
  planGpuMode(args: { plan: PlanHandle; device: number }): 'dense' | 'plan' | 'trial';
  binaryConv2d: Op<BinaryConvArgs>;
  binaryConv2dReference(args: BinaryConvArgs): void;

  /** Machine ceilings for the benchmarks and the MST cost model. */
  fmaPeak: Op<{ seconds: number }, number>;
  popcountPeak(args: { seconds: number }): number;
  readSum(a: Uint32Array): number;
  mstCalibration(args: { output?: 'int32' | 'float' | 'bits' }): { densePerWord: number; reusePerBit: number; reusePerEdge: number; transposePerWord: number };

  cudaInfo(args: { peek?: boolean; paths?: string[]; refuse?: Omit<NativeCudaStatus, 'tried'> }, async?: false): NativeCudaStatus;
  /** Loads the plugin on the thread pool. */
  cudaInfo(args: { paths: string[] }, async: true): Promise<NativeCudaStatus>;
  cudaAlloc(args: { device: number; bytes: number; zero?: boolean }): DeviceHandle;
  cudaFree(handle: DeviceHandle): void;
  cudaUpload: Op<{ handle: DeviceHandle; dtype: NativeDType; host: HostArray }>;
  cudaDownload: Op<{ handle: DeviceHandle; dtype: NativeDType; host: HostArray }>;
  /** Bytes of device memory held by live handles (tests). */
  externalMemory(): number;
}
