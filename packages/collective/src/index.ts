/** @pfc/collective */
export const PACKAGE_NAME = '@pfc/collective';
