/** @pfc/backbone */
export const PACKAGE_NAME = '@pfc/backbone';
