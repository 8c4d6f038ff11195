/** The @tensorflow/tfjs-core version whose gradient definitions `tfjs-gradients.cjs` bundles (loading it registers them). */
export declare const TFJS_CORE_VERSION: string;
