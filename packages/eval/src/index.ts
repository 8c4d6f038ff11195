/** @pfc/eval */
export const PACKAGE_NAME = '@pfc/eval';
