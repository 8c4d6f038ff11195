import { PfcError, assertArg } from './errors';

describe('PfcError', () => {
  it('carries a code, a cause and details, and is an Error', () => {
    const cause = new Error('disk');
    const e = new PfcError('E_RECORDIO_MAGIC', 'bad', { cause, details: { offset: 4 } });
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(PfcError);
    expect(e.code).toBe('E_RECORDIO_MAGIC');
    expect(e.cause).toBe(cause);
    expect(e.details.offset).toBe(4);
    expect(e.name).toBe('PfcError');
    expect(PfcError.is(e, 'E_RECORDIO_MAGIC')).toBe(true);
    expect(PfcError.is(e, 'E_OTHER')).toBe(false);
    expect(PfcError.is(new Error('x'))).toBe(false);
  });

  it('assertArg names the function, argument, actual and expected value', () => {
    expect(() => assertArg(false, 'partialFC', 'sampleRate', 1.5, 'in (0, 1]')).toThrow(
      "partialFC: argument 'sampleRate' must be in (0, 1], got 1.5",
    );
    expect(() => assertArg(true, 'f', 'a', 1, 'x')).not.toThrow();
  });
});
