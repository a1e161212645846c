// tsflannel's version, printed by `tsflanneld --version`, `tsflannel --version`
// and exported as tsflannel_build_info. A unit test keeps it equal to package.json.
export const VERSION = '0.1.0';
