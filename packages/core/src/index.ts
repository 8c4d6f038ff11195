/** @pfc/core */
export const PACKAGE_NAME = '@pfc/core';
