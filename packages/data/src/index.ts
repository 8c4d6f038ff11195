/** @pfc/data */
export const PACKAGE_NAME = '@pfc/data';
