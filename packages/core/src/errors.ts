/**
 * Error codes are upper-case strings prefixed with `E_` that name the failing condition, not the place:
 * `E_RECORDIO_MAGIC`, `E_LABEL_RANGE`, `E_WORLD_SIZE`. A code never changes meaning once published; the message
 * names the file, offset, argument, actual and expected value so the error can be acted on without a debugger.
 */
export type PfcErrorCode = `E_${string}`;

/** Options of a {@link PfcError}: the ES2022 `cause` and free-form structured details. */
export interface PfcErrorOptions {
  cause?: unknown;
  /** Structured facts about the failure (file, offset, index...), for programs that handle the error. */
  details?: Record<string, unknown>;
}

/**
 * The one error class of every `@pfc` package. Catch with `instanceof PfcError` and branch on `code`.
 */
export class PfcError extends Error {
  readonly code: PfcErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: PfcErrorCode, message: string, options: PfcErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PfcError';
    this.code = code;
    this.details = Object.freeze({ ...(options.details ?? {}) });
  }

  /** Whether `err` is a `PfcError`, optionally with the given code. */
  static is(err: unknown, code?: PfcErrorCode): err is PfcError {
    return err instanceof PfcError && (code === undefined || err.code === code);
  }
}

/** Throws `E_ARGUMENT` naming the function, argument, actual and expected value unless `ok`. */
export function assertArg(ok: boolean, fn: string, arg: string, actual: unknown, expected: string): asserts ok {
  if (!ok) {
    throw new PfcError('E_ARGUMENT', `${fn}: argument '${arg}' must be ${expected}, got ${formatValue(actual)}`, {
      details: { fn, arg, actual },
    });
  }
}

/** Short, safe rendering of a value for error messages. */
export function formatValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint' || v == null) return String(v);
  if (Array.isArray(v)) return `[${v.slice(0, 8).map(formatValue).join(', ')}${v.length > 8 ? ', ...' : ''}]`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as { length?: number }).length ?? v.byteLength})`;
  try {
    const s = JSON.stringify(v);
    return s.length > 120 ? `${s.slice(0, 117)}...` : s;
  } catch {
    return Object.prototype.toString.call(v);
  }
}
