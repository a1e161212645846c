// The bundle that holds the node tool and the agent (scripts/package.sh
// embeds it in the single executable beside the plugin-only main script; see
// src/sea/programs.ts). One bundle for both, because they share most of their
// code (the Kubernetes client alone is 4 MB); each is evaluated only when run.
import type { ProgramModule } from '../sea/programs.js';

export const programs: Record<'tool' | 'agent', () => Promise<ProgramModule>> = {
  tool: () => import('../cli/main.js'),
  agent: () => import('../daemon/main.js'),
};
