/** @pfc/partial-fc */
export const PACKAGE_NAME = '@pfc/partial-fc';
