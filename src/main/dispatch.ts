// Which program the single executable runs: pure, so it is tested alone
// (test/unit/main-dispatch.test.ts). Kept free of imports: it runs before
// anything else on every CNI call.

/** The names the one executable answers to (links, copies, or a first argument). */
export const AGENT_NAME = 'tsflanneld';
export const TOOL_NAME = 'tsflannel';
export const STANDALONE_NAME = 'tsflannel-standalone';
export const PROGRAM_NAMES: readonly string[] = [TOOL_NAME, STANDALONE_NAME, AGENT_NAME];

export interface Program {
  /** the name the program answers to, in messages */
  name: string;
  /** the CNI plugin, the node agent, or the node tool (status, doctor, install) */
  kind: 'plugin' | 'agent' | 'tool';
  /** true when argv[2] named the program and must be dropped before its own flags */
  consumedArg: boolean;
}

const CNI_CALL_VARS = ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'];

function baseName(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? path : path.slice(i + 1);
}

/**
 * A first argument naming a program wins (no CLI command has those names);
 * else argv[0]'s basename; anything else is tsflannel. tsflannel and
 * tsflannel-standalone are the CNI plugin when CNI_COMMAND is set (even to
 * '': a runtime's bad call gets the spec's error JSON) or when a runtime-style
 * call (no arguments, CNI_CONTAINERID, CNI_NETNS or CNI_IFNAME set) lacks it;
 * otherwise the node tool. The forwarder (native/forward/forward.c,
 * standalone_is_plugin) mirrors this to know when the standalone it runs is
 * the plugin, whose environment loses Node's start-up variables;
 * test/integration/forwarder.test.ts compares the two.
 */
export function programFor(argv0: string, argv: readonly string[], env: NodeJS.ProcessEnv): Program {
  const first = argv[2];
  const byArg = first !== undefined && PROGRAM_NAMES.includes(first);
  const name = byArg ? first! : PROGRAM_NAMES.includes(baseName(argv0)) ? baseName(argv0) : TOOL_NAME;
  if (name === AGENT_NAME) return { name, kind: 'agent', consumedArg: byArg };
  const args = argv.length - (byArg ? 3 : 2);
  const asPlugin = env.CNI_COMMAND !== undefined || (args <= 0 && CNI_CALL_VARS.some((k) => env[k] !== undefined));
  return { name, kind: asPlugin ? 'plugin' : 'tool', consumedArg: byArg };
}
