// The CNI protocol layer: environment, network config, results, versions and
// the plugin entry that ties them together.
export * from './errors.js';
export * from './versions.js';
export * from './env.js';
export * from './validate.js';
export * from './result.js';
export * from './config.js';
export * from './skel.js';
export * from './stdin.js';
