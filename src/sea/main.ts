// The single executable's main script (scripts/package.sh bundles it): it
// only runs the embedded dispatcher and plugin bundle (src/main/tsflannel.ts)
// with the code cache the build wrote for it; see src/sea/embedded.ts.
import { MAIN_BUNDLE, runEmbedded } from './embedded.js';

runEmbedded(MAIN_BUNDLE);
