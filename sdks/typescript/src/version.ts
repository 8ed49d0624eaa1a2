/** This package's name on the wire (`sdk.name` of every batch) and its version. */
export const SDK_NAME = "tally-node";
export const SDK_VERSION = "0.1.0";
