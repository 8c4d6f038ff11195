import { PfcError } from '@pfc/core';

/**
 * A deliberately small pickle reader: it understands the opcodes that verification `.bin` files use
 * (protocols 2–5: lists, tuples, bytes, Python 2 strings, bools, ints, floats, memo, frames) and rebuilds numpy
 * uint8 arrays from the few numpy callables that pickle them. It never calls anything: a whitelisted GLOBAL
 * resolves to an inert marker, and REDUCE/BUILD on a marker is interpreted here. Every other GLOBAL, and every
 * opcode outside the subset, is refused with `E_PICKLE_UNSAFE` before anything after it is read.
 */

/** A numpy array rebuilt from a pickle (only `uint8` is accepted). */
export interface PickledNdarray {
  readonly kind: 'ndarray';
  readonly dtype: 'u1';
  readonly shape: number[];
  readonly data: Uint8Array;
}

/** A Python tuple (kept apart from lists so callers can check the structure). */
export interface PickledTuple {
  readonly kind: 'tuple';
  readonly items: PickleValue[];
}

/** Values this reader can produce. `str` becomes a JS string, `bytes`/`bytearray`/Python 2 `str` a Uint8Array. */
export type PickleValue =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | PickleValue[]
  | PickledTuple
  | PickledNdarray
  | PickleMarker;

/** Inert stand-ins for the whitelisted numpy/builtin callables and the objects they create before BUILD. */
interface PickleMarker {
  readonly kind: 'global' | 'dtype' | 'ndarray-pending';
  name?: string;
  dtype?: string;
}

/** `module.name` pairs a GLOBAL may name; nothing else is ever resolved. */
const WHITELIST = new Set([
  'numpy.core.multiarray._reconstruct',
  'numpy._core.multiarray._reconstruct',
  'numpy.ndarray',
  'numpy.dtype',
  'numpy.core.numeric._frombuffer',
  'numpy._core.numeric._frombuffer',
  '_codecs.encode',
  'builtins.bytes',
  '__builtin__.bytes',
  'builtins.bytearray',
  '__builtin__.bytearray',
]);

const MARK = Symbol('mark');
type StackItem = PickleValue | typeof MARK;

const OPNAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT',
  0x4a: 'BININT', 0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID',
  0x51: 'BINPERSID', 0x52: 'REDUCE', 0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND', 0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT',
  0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET', 0x69: 'INST', 0x6a: 'LONG_BINGET',
  0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT', 0x72: 'LONG_BINPUT',
  0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT', 0x80: 'PROTO',
  0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2', 0x87: 'TUPLE3',
  0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES',
  0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS',
  0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME',
  0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

function isMarker(v: unknown): v is PickleMarker {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) &&
    ((v as PickleMarker).kind === 'global' || (v as PickleMarker).kind === 'dtype' || (v as PickleMarker).kind === 'ndarray-pending');
}

/** Whether a value is a tuple produced by {@link parsePickle}. */
export function isPickledTuple(v: unknown): v is PickledTuple {
  return typeof v === 'object' && v !== null && (v as PickledTuple).kind === 'tuple';
}

/** Whether a value is a numpy array produced by {@link parsePickle}. */
export function isPickledNdarray(v: unknown): v is PickledNdarray {
  return typeof v === 'object' && v !== null && (v as PickledNdarray).kind === 'ndarray';
}

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Parses pickle bytes with the safe subset described above.
 * @param bytes the whole pickle
 * @param source a label (file path) for error messages
 * @returns the unpickled value; tuples as {@link PickledTuple}, numpy uint8 arrays as {@link PickledNdarray}
 * @throws PfcError `E_PICKLE_UNSAFE` (opcode or callable outside the subset), `E_PICKLE_FORMAT` (truncated or malformed)
 */
export function parsePickle(bytes: Uint8Array, source = '<buffer>'): PickleValue {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: StackItem[] = [];
  const memo = new Map<number, PickleValue>();
  let pos = 0;
  let opStart = 0;
  let op = 0;

  const fmt = (msg: string) =>
    new PfcError('E_PICKLE_FORMAT', `${source}: ${msg} (byte offset ${opStart})`, { details: { file: source, offset: opStart } });
  const unsafe = (msg: string) =>
    new PfcError('E_PICKLE_UNSAFE', `${source}: ${msg} at byte offset ${opStart}; the .bin reader only accepts lists, tuples, bytes, bools and numpy uint8 arrays and executes nothing`, {
      details: { file: source, offset: opStart, opcode: OPNAMES[op] ?? `0x${op.toString(16)}` },
    });
  const need = (n: number) => {
    if (n < 0 || pos + n > bytes.length) throw fmt(`truncated: ${OPNAMES[op] ?? 'opcode'} needs ${n} bytes, ${bytes.length - pos} left`);
  };
  const take = (n: number): Uint8Array => {
    need(n);
    const out = bytes.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  const u8 = () => (need(1), bytes[pos++]!);
  const u16 = () => (need(2), (pos += 2), dv.getUint16(pos - 2, true));
  const u32 = () => (need(4), (pos += 4), dv.getUint32(pos - 4, true));
  const i32 = () => (need(4), (pos += 4), dv.getInt32(pos - 4, true));
  const u64 = () => {
    need(8);
    const v = dv.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fmt(`length ${v} is too large`);
    return Number(v);
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) throw fmt('truncated: no newline after GLOBAL argument');
    const s = latin1.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): PickleValue => {
    const v = stack.pop();
    if (v === undefined) throw fmt(`stack underflow at ${OPNAMES[op]}`);
    if (v === MARK) throw fmt(`unexpected MARK consumed by ${OPNAMES[op]}`);
    return v;
  };
  const top = (): PickleValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) throw fmt(`${OPNAMES[op]} needs a value on the stack`);
    return v;
  };
  const popMark = (): PickleValue[] => {
    let k = stack.length - 1;
    while (k >= 0 && stack[k] !== MARK) k--;
    if (k < 0) throw fmt(`${OPNAMES[op]} without a MARK`);
    const items = stack.splice(k) as PickleValue[];
    items.shift();
    return items;
  };
  const memoPut = (i: number) => memo.set(i, top());
  const memoGet = (i: number) => {
    if (!memo.has(i)) throw fmt(`memo key ${i} is not defined`);
    stack.push(memo.get(i)!);
  };
  const tuple = (items: PickleValue[]): PickledTuple => ({ kind: 'tuple', items });
  const global = (module: string, name: string): PickleMarker => {
    const full = `${module}.${name}`;
    if (!WHITELIST.has(full)) throw unsafe(`refusing ${OPNAMES[op]} '${full}'`);
    return { kind: 'global', name: full };
  };

  for (;;) {
    opStart = pos;
    op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) throw fmt(`unsupported pickle protocol ${bytes[pos - 1]}`);
        break;
      case 0x95: // FRAME: frames only bound reads; the payload is parsed in place
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) throw fmt(`STOP with ${stack.length} items on the stack (expected 1)`);
        return pop();
      case 0x28:
        stack.push(MARK);
        break;
      case 0x30:
        pop();
        break;
      case 0x31:
        popMark();
        break;
      case 0x32:
        stack.push(top());
        break;
      case 0x4e:
        stack.push(null);
        break;
      case 0x88:
        stack.push(true);
        break;
      case 0x89:
        stack.push(false);
        break;
      case 0x4a:
        stack.push(i32());
        break;
      case 0x4b:
        stack.push(u8());
        break;
      case 0x4d:
        stack.push(u16());
        break;
      case 0x8a: // LONG1
      case 0x8b: {
        const n = op === 0x8a ? u8() : u32();
        const b = take(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
        if (n > 0 && b[n - 1]! >= 0x80) v -= 1n << BigInt(8 * n);
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw fmt(`integer ${v} is out of range`);
        stack.push(Number(v));
        break;
      }
      case 0x47: {
        need(8);
        stack.push(dv.getFloat64(pos, false));
        pos += 8;
        break;
      }
      case 0x54: // BINSTRING (Python 2 str): bytes, as pickle.load(encoding='bytes') gives
        stack.push(take(i32()));
        break;
      case 0x55:
        stack.push(take(u8()));
        break;
      case 0x42:
        stack.push(take(u32()));
        break;
      case 0x43:
        stack.push(take(u8()));
        break;
      case 0x8e:
      case 0x96:
        stack.push(take(u64()));
        break;
      case 0x58:
      case 0x8c:
      case 0x8d: {
        const n = op === 0x58 ? u32() : op === 0x8c ? u8() : u64();
        try {
          stack.push(utf8.decode(take(n)));
        } catch (err) {
          if (PfcError.is(err)) throw err;
          throw fmt('invalid UTF-8 in a unicode string');
        }
        break;
      }
      case 0x5d:
        stack.push([]);
        break;
      case 0x6c:
        stack.push(popMark());
        break;
      case 0x61: {
        const v = pop();
        const list = top();
        if (!Array.isArray(list)) throw fmt('APPEND target is not a list');
        list.push(v);
        break;
      }
      case 0x65: {
        const items = popMark();
        const list = top();
        if (!Array.isArray(list)) throw fmt('APPENDS target is not a list');
        for (const v of items) list.push(v);
        break;
      }
      case 0x29:
        stack.push(tuple([]));
        break;
      case 0x74:
        stack.push(tuple(popMark()));
        break;
      case 0x85:
      case 0x86:
      case 0x87: {
        const n = op - 0x84;
        const items: PickleValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        stack.push(tuple(items));
        break;
      }
      case 0x71:
        memoPut(u8());
        break;
      case 0x72:
        memoPut(u32());
        break;
      case 0x94:
        memoPut(memo.size);
        break;
      case 0x68:
        memoGet(u8());
        break;
      case 0x6a:
        memoGet(u32());
        break;
      case 0x63: {
        const module = line();
        const name = line();
        stack.push(global(module, name));
        break;
      }
      case 0x93: {
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw unsafe('STACK_GLOBAL with non-string names');
        stack.push(global(module, name));
        break;
      }
      case 0x52: {
        const args = pop();
        const fn = pop();
        if (!isMarker(fn) || fn.kind !== 'global') throw unsafe('REDUCE of something that is not a whitelisted callable');
        if (!isPickledTuple(args)) throw fmt('REDUCE arguments are not a tuple');
        stack.push(reduce(fn.name!, args.items));
        break;
      }
      case 0x62: {
        const state = pop();
        const obj = top();
        if (!isMarker(obj) || obj.kind === 'global') throw unsafe('BUILD on an object that is not a numpy dtype or array');
        build(obj, state);
        break;
      }
      default:
        throw unsafe(`opcode ${OPNAMES[op] ?? `0x${op.toString(16).padStart(2, '0')}`} is not in the accepted subset`);
    }
  }

  function str(v: PickleValue, what: string): string {
    if (typeof v === 'string') return v;
    if (v instanceof Uint8Array) return latin1.decode(v);
    throw fmt(`${what} is not a string`);
  }

  function reduce(name: string, args: PickleValue[]): PickleValue {
    switch (name) {
      case 'numpy.core.multiarray._reconstruct':
      case 'numpy._core.multiarray._reconstruct': {
        const cls = args[0];
        if (!isMarker(cls) || cls.name !== 'numpy.ndarray') throw unsafe('_reconstruct of a class other than numpy.ndarray');
        return { kind: 'ndarray-pending' };
      }
      case 'numpy.dtype': {
        const d = str(args[0] ?? null, 'numpy.dtype argument');
        if (d !== 'u1' && d !== 'uint8' && d !== '|u1') {
          throw unsafe(`numpy.dtype('${d}'): only uint8 arrays (encoded images) are in the accepted subset`);
        }
        return { kind: 'dtype', dtype: 'u1' };
      }
      case 'numpy.core.numeric._frombuffer':
      case 'numpy._core.numeric._frombuffer': {
        const [buf, dtype, shape, order] = args;
        if (!(buf instanceof Uint8Array)) throw fmt('_frombuffer buffer is not bytes');
        if (!isMarker(dtype) || dtype.kind !== 'dtype') throw unsafe('_frombuffer with a dtype that is not numpy.dtype');
        const sh = shapeOf(shape ?? null);
        if (order !== undefined && str(order, '_frombuffer order') !== 'C' && sh.length > 1) throw fmt('Fortran-ordered arrays are not supported');
        return makeArray(sh, buf);
      }
      case '_codecs.encode': {
        const [s, enc] = args;
        const e = enc === undefined ? 'utf-8' : str(enc, 'encoding').toLowerCase();
        if (typeof s !== 'string' || (e !== 'latin1' && e !== 'latin-1')) throw unsafe(`_codecs.encode with encoding '${e}'`);
        return latin1Bytes(s);
      }
      case 'builtins.bytes':
      case '__builtin__.bytes':
      case 'builtins.bytearray':
      case '__builtin__.bytearray': {
        if (args.length === 0) return new Uint8Array(0);
        const [s, enc] = args;
        if (s instanceof Uint8Array && args.length === 1) return s;
        if (typeof s === 'string' && enc !== undefined && ['latin1', 'latin-1'].includes(str(enc, 'encoding').toLowerCase())) return latin1Bytes(s);
        throw unsafe(`${name} with arguments other than bytes or a latin-1 string`);
      }
      default:
        throw unsafe(`refusing to call '${name}'`);
    }
  }

  function latin1Bytes(s: string): Uint8Array {
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 255) throw fmt('latin-1 string holds a character above U+00FF');
      out[i] = c;
    }
    return out;
  }

  function shapeOf(v: PickleValue): number[] {
    if (!isPickledTuple(v) || !v.items.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0)) throw fmt('array shape is not a tuple of non-negative integers');
    return v.items as number[];
  }

  function makeArray(shape: number[], data: Uint8Array): PickledNdarray {
    const count = shape.reduce((a, b) => a * b, 1);
    if (count !== data.length) throw fmt(`array of shape [${shape}] needs ${count} bytes, the pickle holds ${data.length}`);
    return { kind: 'ndarray', dtype: 'u1', shape, data };
  }

  function build(obj: PickleMarker, state: PickleValue): void {
    if (!isPickledTuple(state)) throw fmt('BUILD state is not a tuple');
    const s = state.items;
    if (obj.kind === 'dtype') {
      // (version, byteorder, subarray, names, fields, elsize, alignment, flags): a plain uint8 has no fields
      const order = s[1] === undefined ? '|' : str(s[1], 'dtype byte order');
      if (!['|', '<', '>', '='].includes(order) || (s[3] ?? null) !== null || (s[4] ?? null) !== null) throw fmt('unsupported numpy dtype state');
      return;
    }
    // ndarray state: (version, shape, dtype, is_fortran, raw data)
    const [, shape, dtype, fortran, raw] = s;
    if (!isMarker(dtype) || dtype.kind !== 'dtype') throw unsafe('ndarray state with a dtype that is not numpy.dtype');
    const sh = shapeOf(shape ?? null);
    if (fortran === true && sh.length > 1) throw fmt('Fortran-ordered arrays are not supported');
    if (!(raw instanceof Uint8Array)) throw unsafe('ndarray state whose data is not bytes (object arrays are refused)');
    // the pending object becomes the array in place, so memo references to it see the array too
    const arr = makeArray(sh, raw);
    const o = obj as unknown as Record<string, unknown>;
    delete o.target;
    Object.assign(o, arr);
  }
}
