/** @pfc/train */
export const PACKAGE_NAME = '@pfc/train';
