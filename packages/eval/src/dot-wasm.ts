/**
 * A ~200-byte WebAssembly SIMD kernel for the IJB scoring hot loop: for each pair, the dot product of two float32
 * rows of a feature table (f32x4 multiply-adds into four independent accumulators, then summed). Hand-assembled so
 * the package needs no toolchain; the caller falls back to JS when the runtime has no WebAssembly SIMD.
 *
 * Text form of `dots(F, rowBytes, rowsA, rowsB, out, n)` (rowBytes a multiple of 64):
 *   block  (br_if n == 0)
 *     loop   a = F + rowsA[p] * rowBytes; b = F + rowsB[p] * rowBytes; acc0..3 = 0; k = 0
 *       loop   acc_j += load(a + k + 16j) * load(b + k + 16j) for j = 0..3; k += 64; br_if k < rowBytes
 *       acc = (acc0 + acc1) + (acc2 + acc3); out[p] = (l0 + l1) + (l2 + l3); advance; br_if --n
 */
const LOCAL_A = 6;
const LOCAL_B = 7;
const LOCAL_K = 8;
const ACC = [9, 10, 11, 12];
const get = (i: number) => [0x20, i];
const set = (i: number) => [0x21, i];
const F32X4_ADD = [0xfd, 0xe4, 0x01];
const F32X4_MUL = [0xfd, 0xe6, 0x01];
// v128.load with align 2^2 and a constant offset (< 128, one LEB byte)
const load = (offset: number) => [0xfd, 0x00, 0x02, offset];
const lane = (i: number) => [...get(ACC[0]!), 0xfd, 0x1f, i];

const CODE: number[] = [
  0x02, 0x40, // block
  ...get(5), 0x45, 0x0d, 0x00, // n == 0 → exit
  0x03, 0x40, // loop over pairs
  ...get(0), ...get(2), 0x28, 0x02, 0x00, ...get(1), 0x6c, 0x6a, ...set(LOCAL_A), // a = F + rowsA[p] * rowBytes
  ...get(0), ...get(3), 0x28, 0x02, 0x00, ...get(1), 0x6c, 0x6a, ...set(LOCAL_B), // b = F + rowsB[p] * rowBytes
  ...ACC.flatMap((l) => [0xfd, 0x0c, ...new Array<number>(16).fill(0), ...set(l)]), // acc_j = 0
  0x41, 0x00, ...set(LOCAL_K), // k = 0
  0x03, 0x40, // loop over 16-float chunks
  ...ACC.flatMap((l, j) => [
    ...get(l),
    ...get(LOCAL_A), ...get(LOCAL_K), 0x6a, ...load(16 * j),
    ...get(LOCAL_B), ...get(LOCAL_K), 0x6a, ...load(16 * j),
    ...F32X4_MUL, ...F32X4_ADD, ...set(l),
  ]),
  ...get(LOCAL_K), 0x41, 0xc0, 0x00, 0x6a, 0x22, LOCAL_K, // k += 64 (signed LEB 64 = c0 00)
  ...get(1), 0x49, 0x0d, 0x00, // k (teed above) < rowBytes → repeat
  0x0b,
  ...get(ACC[0]!), ...get(ACC[1]!), ...F32X4_ADD, ...get(ACC[2]!), ...get(ACC[3]!), ...F32X4_ADD, ...F32X4_ADD, ...set(ACC[0]!),
  ...get(4), // out address
  ...lane(0), ...lane(1), 0x92, ...lane(2), ...lane(3), 0x92, 0x92,
  0x38, 0x02, 0x00, // f32.store
  ...get(2), 0x41, 0x04, 0x6a, ...set(2),
  ...get(3), 0x41, 0x04, 0x6a, ...set(3),
  ...get(4), 0x41, 0x04, 0x6a, ...set(4),
  ...get(5), 0x41, 0x01, 0x6b, 0x22, 0x05, 0x0d, 0x00, // --n → repeat
  0x0b,
  0x0b,
  0x0b, // end of function
];

function section(id: number, content: number[]): number[] {
  return [id, ...leb(content.length), ...content];
}

function leb(v: number): number[] {
  const out: number[] = [];
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v !== 0) b |= 0x80;
    out.push(b);
  } while (v !== 0);
  return out;
}

function moduleBytes(): Uint8Array {
  const body = [0x02, 0x03, 0x7f, 0x04, 0x7b, ...CODE]; // locals: 3 × i32, 4 × v128
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [0x01, 0x60, 0x06, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x00]),
    ...section(2, [0x01, 0x03, 0x65, 0x6e, 0x76, 0x03, 0x6d, 0x65, 0x6d, 0x02, 0x00, 0x01]),
    ...section(3, [0x01, 0x00]),
    ...section(7, [0x01, 0x04, 0x64, 0x6f, 0x74, 0x73, 0x00, 0x00]),
    ...section(10, [0x01, ...leb(body.length), ...body]),
  ]);
}

/** The few WebAssembly JS-API members used here (the package's tsconfig has no DOM/WebAssembly lib). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Memory: new (descriptor: { initial: number }) => { buffer: ArrayBuffer };
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
const WA = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

let compiled: object | null | undefined;

/**
 * Scores pairs with the SIMD kernel: `out[p] = ⟨F[rowsA[p]], F[rowsB[p]]⟩` (float32 products and lane sums).
 * @param features [rows, dim] float32, dim a multiple of 16
 * @param rowsA [n] row indices
 * @param rowsB [n] row indices
 * @returns [n] float32 scores, or null when WebAssembly SIMD is unavailable or dim is not a multiple of 16
 */
export function wasmPairDots(features: Float32Array, dim: number, rowsA: Int32Array, rowsB: Int32Array): Float32Array | null {
  if (dim % 16 !== 0 || dim === 0) return null;
  if (compiled === undefined) {
    try {
      if (!WA) throw new Error('no WebAssembly');
      compiled = new WA.Module(moduleBytes());
    } catch {
      compiled = null;
    }
  }
  if (compiled === null) return null;
  const n = rowsA.length;
  const chunk = Math.min(n, 1 << 20);
  const featBytes = features.length * 4;
  const need = featBytes + chunk * 12 + 64;
  if (need > 2 ** 31) return null;
  const memory = new WA!.Memory({ initial: Math.ceil(need / 65536) });
  const { dots } = new WA!.Instance(compiled, { env: { mem: memory } }).exports as unknown as { dots: (F: number, rowBytes: number, a: number, b: number, out: number, n: number) => void };
  const heap = new Uint8Array(memory.buffer);
  heap.set(new Uint8Array(features.buffer, features.byteOffset, featBytes), 0);
  const aOff = featBytes;
  const bOff = aOff + chunk * 4;
  const oOff = bOff + chunk * 4;
  const i32 = new Int32Array(memory.buffer);
  const f32 = new Float32Array(memory.buffer);
  const out = new Float32Array(n);
  for (let s = 0; s < n; s += chunk) {
    const m = Math.min(chunk, n - s);
    i32.set(rowsA.subarray(s, s + m), aOff / 4);
    i32.set(rowsB.subarray(s, s + m), bOff / 4);
    dots(0, dim * 4, aOff, bOff, oOff, m);
    out.set(f32.subarray(oOff / 4, oOff / 4 + m), s);
  }
  return out;
}
